"""The kind and k3s providers, through fake `kind` / `docker` / `ssh` executables that record their arguments.

kind and K3s cannot run here; what can be proven is what dr asks of them, in
which order, and how it reads their answers. The fakes print what the real
tools print for these commands.
"""

from __future__ import annotations

import json
import re
import stat
import sys
from pathlib import Path

import pytest
import yaml

from dr import errors
from dr.adapters import providers

KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [
        {"name": "default", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority-data": "Q0E="}}
    ],
    "users": [{"name": "default", "user": {"token": "t"}}],
    "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
    "current-context": "default",
}


Rule = tuple[str, str, int]  # (the last argument starts with / the args joined contain this, stdout, exit code)


def fake(bin_dir: Path, name: str, rules: list[Rule]) -> None:
    """An executable that appends its argv (JSON) to calls.log and plays the first matching rule."""
    path = bin_dir / name
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"with open({str(bin_dir / 'calls.log')!r}, 'a') as log:\n"
        f"    log.write(json.dumps([{name!r}, *sys.argv[1:]]) + '\\n')\n"
        f"joined = ' '.join(sys.argv[1:])\n"
        f"for needle, out, code in {rules!r}:\n"
        "    if needle in joined:\n"
        "        (sys.stdout if code == 0 else sys.stderr).write(out)\n"
        "        sys.exit(code)\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def calls(bin_dir: Path) -> list[list[str]]:
    log = bin_dir / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with only the fakes on it: a tool not faked is a tool not installed."""
    found = tmp_path / "bin"
    found.mkdir()
    monkeypatch.setenv("PATH", str(found))
    return found


def test_kind_creates_a_labelled_cluster_with_the_pinned_image_and_exports_its_kubeconfig(
    bin_dir: Path, tmp_path: Path
) -> None:
    fake(bin_dir, "docker", [])
    fake(bin_dir, "kind", [("get clusters", "other\n", 0), ("get kubeconfig", yaml.safe_dump(KUBECONFIG), 0)])
    made = providers.kind("drill-1", tmp_path / "work", node_image="kindest/node:v1.31.4@sha256:abc", run_id="r1")
    recorded = calls(bin_dir)
    assert ["kind", "get", "clusters"] == recorded[0]
    create = recorded[1]
    assert ["kind", "create", "cluster", "--name", "drill-1", "--config"] == create[:6]
    assert ["--wait", "120s"] == create[7:]
    config = yaml.safe_load(Path(create[6]).read_text())
    (node,) = config["nodes"]
    assert "kindest/node:v1.31.4@sha256:abc" == node["image"]
    assert {providers.OWNER_LABEL: "r1"} == node["labels"]
    assert ["kind", "get", "kubeconfig", "--name", "drill-1"] == recorded[2]
    assert "kind-drill-1" == made.context
    assert KUBECONFIG == yaml.safe_load(made.kubeconfig.read_text())
    assert 0o600 == made.kubeconfig.stat().st_mode & 0o777


def test_kind_reuses_a_cluster_it_already_made(bin_dir: Path, tmp_path: Path) -> None:
    fake(bin_dir, "docker", [])
    fake(bin_dir, "kind", [("get clusters", "drill-1\n", 0), ("get kubeconfig", "{}", 0)])
    providers.kind("drill-1", tmp_path / "work")
    assert not any(c[1] == "create" for c in calls(bin_dir))


def test_kind_and_docker_missing_are_clear_config_errors(bin_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="the `kind` command is not installed") as missing:
        providers.kind("drill-1", tmp_path)
    assert 2 == missing.value.exit_code
    fake(bin_dir, "kind", [])
    with pytest.raises(errors.ConfigError, match="the `docker` command is not installed"):
        providers.kind("drill-1", tmp_path)


def test_kind_create_failure_carries_kinds_own_words(bin_dir: Path, tmp_path: Path) -> None:
    fake(bin_dir, "docker", [])
    fake(bin_dir, "kind", [("create", "ERROR: failed to create cluster: node(s) already exist\n", 1)])
    with pytest.raises(errors.PermanentError, match="node\\(s\\) already exist"):
        providers.kind("drill-1", tmp_path)


def test_k3s_over_ssh_installs_the_pinned_version_and_rewrites_the_kubeconfig(bin_dir: Path, tmp_path: Path) -> None:
    fake(
        bin_dir,
        "ssh",
        [("k3s --version", "sh: k3s: not found\n", 127), ("cat /etc/rancher", yaml.safe_dump(KUBECONFIG), 0)],
    )
    host = providers.K3sHost("10.0.0.5", "ubuntu", tmp_path / "id_ed25519", "v1.31.4+k3s1")
    made = providers.k3s(host, tmp_path / "work")
    recorded = calls(bin_dir)
    target = ["-i", str(tmp_path / "id_ed25519"), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new"]
    assert all(c[:7] == ["ssh", *target] and c[7] == "ubuntu@10.0.0.5" for c in recorded)
    assert "k3s --version" == recorded[0][8]
    assert (
        "curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION=v1.31.4+k3s1 sh -s - --write-kubeconfig-mode 600"
        == recorded[1][8]
    )
    assert "cat /etc/rancher/k3s/k3s.yaml" == recorded[2][8]
    server = yaml.safe_load(made.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    assert "https://10.0.0.5:6443" == server


def test_k3s_already_at_the_pinned_version_is_not_reinstalled(bin_dir: Path, tmp_path: Path) -> None:
    fake(bin_dir, "ssh", [("k3s --version", "k3s version v1.31.4+k3s1 (abc)\n", 0), ("cat", "{}", 0)])
    providers.k3s(providers.K3sHost("10.0.0.5"), tmp_path / "work")
    assert ["k3s --version", "cat /etc/rancher/k3s/k3s.yaml"] == [c[-1] for c in calls(bin_dir)]


def test_k3s_air_gapped_needs_its_files_and_ssh_is_required_for_a_remote_host(bin_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="the `ssh` command is not installed"):
        providers.k3s(providers.K3sHost("10.0.0.5"), tmp_path / "work")
    fake(bin_dir, "ssh", [("k3s --version", "", 127)])
    empty = tmp_path / "airgap"
    empty.mkdir()
    with pytest.raises(errors.ConfigError, match=re.escape("needs `k3s` and `k3s-airgap-images-<arch>.tar.zst`")):
        providers.k3s(providers.K3sHost("10.0.0.5", airgap_dir=empty), tmp_path / "work")


def test_drill_teardown_deletes_the_kind_cluster(bin_dir: Path) -> None:
    fake(bin_dir, "kind", [])
    providers.delete_kind("drill-1")
    assert [["kind", "delete", "cluster", "--name", "drill-1"]] == calls(bin_dir)
