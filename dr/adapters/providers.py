"""Cluster providers for the `cluster` step: where a fresh cluster comes from, and its kubeconfig.

- `sandbox`: the local sandbox, in the run's state dir (`dr sandbox up` as a library call);
- `kind`: `kind create cluster` with a pinned node image, labelled for the leak sweeper;
- `k3s`: the K3s install script (or an air-gapped binary and images) on this host or on a host over SSH,
  with its kubeconfig fetched and rewritten to the host's address;
- `kubeconfig`: a cluster that already exists.

Each provider is idempotent (a cluster it already made is found, not made twice) and
fails with what is missing and how to get it when its tool is not installed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from dr import errors, files, logs
from dr.adapters import sandbox_process

RUNBOOK: Final = "runbooks/cluster.md"
OWNER_LABEL: Final = "dr.dev/owner"  # on kind nodes: what the drill leak sweeper deletes
KIND_NODE_IMAGE: Final = "kindest/node:v1.31.4"
K3S_VERSION: Final = "v1.31.4+k3s1"

log = logs.get("dr.providers")


@dataclass(frozen=True)
class Cluster:
    provider: str
    kubeconfig: Path
    context: str | None = None
    name: str = ""


def _tool(name: str, why: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise errors.ConfigError(
            f"the `{name}` command is not installed (needed {why})",
            hint=f"install {name}, or choose another provider with --provider",
            runbook=RUNBOOK,
        )
    return found


def _run(argv: list[str], *, what: str, stdin: str | None = None, timeout: float = 900) -> str:
    log.info("provider_command", argv=" ".join(shlex.quote(a) for a in argv))
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise errors.TransientError(f"{what}: `{argv[0]}` did not finish in {timeout:.0f} s", runbook=RUNBOOK) from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise errors.PermanentError(
            f"{what}: `{' '.join(argv[:3])}` exited {done.returncode}: {' / '.join(tail)}", runbook=RUNBOOK
        )
    return done.stdout


def sandbox(state_dir: Path, repos: dict[str, str] | None = None) -> Cluster:
    """The sandbox in `state_dir/sandbox`; `repos` maps Git URLs to the local checkouts its Argo CD reads."""
    directory = state_dir / "sandbox"
    info = sandbox_process.up(directory, repos=repos)
    assert info.kubeconfig is not None
    return Cluster("sandbox", info.kubeconfig, None, "sandbox")


def kind(name: str, workdir: Path, *, node_image: str = KIND_NODE_IMAGE, run_id: str = "") -> Cluster:
    """`kind create cluster` unless a cluster of that name exists; its kubeconfig in `workdir`."""
    binary = _tool("kind", "for provider kind")
    _tool("docker", "by kind, which runs its nodes as Docker containers")
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / f"kind-{name}.kubeconfig"
    existing = _run([binary, "get", "clusters"], what="listing kind clusters").split()
    if name not in existing:
        config = {
            "kind": "Cluster",
            "apiVersion": "kind.x-k8s.io/v1alpha4",
            "name": name,
            "nodes": [{"role": "control-plane", "image": node_image, "labels": {OWNER_LABEL: run_id or "dr"}}],
        }
        path = workdir / f"kind-{name}.yaml"
        files.write_atomic(path, yaml.safe_dump(config).encode())
        _run(
            [binary, "create", "cluster", "--name", name, "--config", str(path), "--wait", "120s"],
            what=f"creating kind cluster {name}",
        )
    text = _run([binary, "get", "kubeconfig", "--name", name], what=f"exporting the kubeconfig of kind cluster {name}")
    files.write_atomic(kubeconfig, text.encode(), mode=0o600)
    return Cluster("kind", kubeconfig, f"kind-{name}", name)


def require_kind() -> None:
    """Fail before anything is made when kind or Docker is missing."""
    _tool("kind", "for provider kind")
    _tool("docker", "by kind, which runs its nodes as Docker containers")


def kind_clusters(prefix: str = "") -> list[str]:
    """The kind clusters on this machine whose names start with `prefix`."""
    listed = _run([_tool("kind", "to list kind clusters"), "get", "clusters"], what="listing kind clusters")
    return [name for name in listed.split() if name.startswith(prefix)]


def delete_kind(name: str) -> None:
    """Drill teardown: delete the kind cluster (absent is fine)."""
    _run([_tool("kind", "to delete a kind cluster"), "delete", "cluster", "--name", name], what=f"deleting {name}")


@dataclass(frozen=True)
class K3sHost:
    address: str | None = None  # None: this host
    user: str = "root"
    ssh_key: Path | None = None
    version: str = K3S_VERSION
    airgap_dir: Path | None = None  # holds `k3s` and `k3s-airgap-images-amd64.tar.zst`


def _on_host(host: K3sHost, command: str) -> list[str]:
    if host.address is None:
        return ["sh", "-c", command]
    ssh = _tool("ssh", "to install K3s on a remote host")
    key = ["-i", str(host.ssh_key)] if host.ssh_key else []
    return [
        ssh,
        *key,
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        f"{host.user}@{host.address}",
        command,
    ]


def k3s(host: K3sHost, workdir: Path) -> Cluster:
    """Install the pinned K3s unless it already runs, then fetch its kubeconfig pointing at the host."""
    version = shlex.quote(host.version)
    present = subprocess.run(_on_host(host, "k3s --version"), capture_output=True, text=True, timeout=120, check=False)
    if host.version.split("+")[0] not in present.stdout:
        if host.airgap_dir is not None:
            _airgap_copy(host)
            install = (
                f"curl -sfL https://get.k3s.io | INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_VERSION={version} sh -s -"
            )
            script = host.airgap_dir / "install.sh"
            if script.exists():
                install = f"INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_VERSION={version} sh /tmp/dr-k3s/install.sh"
        else:
            install = (
                f"curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION={version} sh -s - --write-kubeconfig-mode 600"
            )
        _run(_on_host(host, install), what=f"installing K3s {host.version} on {host.address or 'this host'}")
    text = _run(_on_host(host, "cat /etc/rancher/k3s/k3s.yaml"), what="reading the K3s kubeconfig")
    config = yaml.safe_load(text) or {}
    address = host.address or "127.0.0.1"
    for cluster in config.get("clusters") or []:
        server = str(cluster.get("cluster", {}).get("server", ""))
        cluster["cluster"]["server"] = server.replace("127.0.0.1", address).replace("localhost", address)
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "k3s.kubeconfig"
    files.write_atomic(kubeconfig, yaml.safe_dump(config).encode(), mode=0o600)
    return Cluster("k3s", kubeconfig, None, address)


def _airgap_copy(host: K3sHost) -> None:
    assert host.airgap_dir is not None
    binary = host.airgap_dir / "k3s"
    images = sorted(host.airgap_dir.glob("k3s-airgap-images-*"))
    if not binary.exists() or not images:
        raise errors.ConfigError(
            f"{host.airgap_dir}: an air-gapped install needs `k3s` and `k3s-airgap-images-<arch>.tar.zst` there",
            runbook=RUNBOOK,
        )
    targets = [(binary, "/usr/local/bin/k3s"), (images[0], f"/var/lib/rancher/k3s/agent/images/{images[0].name}")]
    for local, remote in targets:
        if host.address is None:
            _run(["sh", "-c", f"mkdir -p {shlex.quote(str(Path(remote).parent))}"], what="preparing K3s paths")
            _run(["cp", str(local), remote], what=f"copying {local.name}")
        else:
            scp = _tool("scp", "to copy the air-gapped K3s files")
            key = ["-i", str(host.ssh_key)] if host.ssh_key else []
            _run(_on_host(host, f"mkdir -p {shlex.quote(str(Path(remote).parent))}"), what="preparing K3s paths")
            _run([scp, *key, str(local), f"{host.user}@{host.address}:{remote}"], what=f"copying {local.name}")
    _run(_on_host(host, "chmod 755 /usr/local/bin/k3s"), what="making k3s executable")


def existing(kubeconfig: Path | None, context: str | None) -> Cluster:
    """A cluster that exists, through its kubeconfig: the one given, else KUBECONFIG, else ~/.kube/config.

    KUBECONFIG may list several files, as kubectl reads it: the kubernetes client merges them the same way
    (the first file to name a cluster, user or context wins), and the run records the list to resume with.
    """
    if kubeconfig is None:
        listed = os.environ.get("KUBECONFIG", "")
        kubeconfig = Path(listed) if listed.strip(os.pathsep) else Path("~/.kube/config").expanduser()
    if not kubeconfig_files(kubeconfig):
        raise errors.ConfigError(
            f"{kubeconfig}: kubeconfig not found",
            hint="pass --kubeconfig (or set cluster.kubeconfig, or KUBECONFIG)",
            runbook=RUNBOOK,
        )
    return Cluster("kubeconfig", kubeconfig, context, context or "")


def kubeconfig_files(kubeconfig: Path) -> list[Path]:
    """The files of a kubeconfig value that exist: one path, or a KUBECONFIG list (missing ones are skipped,
    as kubectl skips them)."""
    paths = [Path(p).expanduser() for p in str(kubeconfig).split(os.pathsep) if p]
    return [p for p in paths if p.is_file()]


def ready(provider: str, host: K3sHost | None = None) -> str:
    """What `dr doctor` says of a provider that creates the cluster: the tools it needs are here, or
    `ConfigError` naming the missing one."""
    if provider == "sandbox":
        backend = "the real control plane" if sandbox_process.testbed_built() else "the emulated API (`make testbed`)"
        return f"a local sandbox with {backend}"
    if provider == "kind":
        require_kind()
        return "kind and docker are installed"
    if provider == "k3s":
        if host is not None and host.address:
            _tool("ssh", "to install K3s on a remote host")
            return f"K3s {host.version} is installed over ssh on {host.user}@{host.address}"
        if os.geteuid() != 0:
            raise errors.ConfigError(
                "installing K3s on this host needs root", hint="run as root, or set cluster.k3s_host", runbook=RUNBOOK
            )
        if host is None or host.airgap_dir is None:
            _tool("curl", "to download the K3s installer")
        return "K3s is installed on this host"
    raise errors.ConfigError(f"provider {provider!r} does not create a cluster", runbook=RUNBOOK)
