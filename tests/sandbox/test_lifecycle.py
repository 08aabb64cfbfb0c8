"""`dr sandbox up/status/faults/down`: a background process that leaves nothing behind and survives restarts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
from click.testing import CliRunner, Result

from dr import cli, errors
from dr.adapters import kube, sandbox_process, vault
from tests.polling import eventually


@pytest.fixture(autouse=True)
def _always_down(tmp_path: Path) -> Iterator[None]:
    """Whatever a test does or fails to do, no sandbox it started outlives it."""
    yield
    for directory in tmp_path.iterdir():
        if directory.is_dir():
            sandbox_process.down(directory)


def dr(*args: str) -> Result:
    return CliRunner().invoke(cli.cli, list(args))


def up(directory: Path, *extra: str) -> dict[str, object]:
    result = dr("sandbox", "up", "--dir", str(directory), "-o", "json", *extra)
    assert 0 == result.exit_code, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def listening(url: str) -> bool:
    host, port = url.removeprefix("https://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
        return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    return sandbox_process.alive(pid)


def started_in(directory: Path) -> list[str]:
    """Every live process whose command line names the sandbox dir: the control plane's four, OpenBao's."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and str(directory) in argv and alive(int(proc.name)):
            found.append(argv)
    return found


def assert_gone(info: dict[str, object]) -> None:
    assert not alive(int(info["pid"]))  # type: ignore[call-overload]
    assert not listening(str(info["url"]))
    assert [] == started_in(Path(str(info["kubeconfig"])).parent)


def core(directory: Path) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(directory / "kubeconfig")))


def test_up_down_twice_leaves_nothing(tmp_path: Path) -> None:
    """up → serving; down → no process, no port, no lock; twice in a row; down again is a no-op."""
    for _ in range(2):
        info = up(tmp_path / "sb")
        assert info["healthy"] is True
        assert 0 == dr("sandbox", "status", "--dir", str(tmp_path / "sb")).exit_code
        assert 0 == dr("sandbox", "down", "--dir", str(tmp_path / "sb")).exit_code
        assert_gone(info)
        assert not (tmp_path / "sb" / "sandbox.lock").exists()
    assert 0 == dr("sandbox", "down", "--dir", str(tmp_path / "sb")).exit_code
    assert 1 == dr("sandbox", "status", "--dir", str(tmp_path / "sb")).exit_code


def test_two_sandboxes_side_by_side(tmp_path: Path) -> None:
    """Two sandboxes run at once on their own ports with their own objects."""
    first, second = up(tmp_path / "one"), up(tmp_path / "two")
    try:
        assert first["url"] != second["url"]
        core(tmp_path / "one").create_namespace({"metadata": {"name": "only-in-one"}})
        names = {n.metadata.name for n in core(tmp_path / "two").list_namespace().items}
        assert "only-in-one" not in names
    finally:
        dr("sandbox", "down", "--dir", str(tmp_path / "one"))
        dr("sandbox", "down", "--dir", str(tmp_path / "two"))
    assert_gone(first)
    assert_gone(second)


def test_down_after_sigkill_and_state_survives_a_restart(tmp_path: Path) -> None:
    """SIGKILL the sandbox process: down still cleans up; up again serves the objects written before."""
    info = up(tmp_path / "sb")
    core(tmp_path / "sb").create_namespace({"metadata": {"name": "survivor"}})
    time.sleep(0.6)  # the state is flushed every 0.2 s
    os.kill(int(info["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    deadline = time.monotonic() + 30  # a loaded machine can take seconds to finish a killed process's exit
    while alive(int(info["pid"])) and time.monotonic() < deadline:  # type: ignore[call-overload]
        time.sleep(0.05)
    assert 0 == dr("sandbox", "down", "--dir", str(tmp_path / "sb")).exit_code
    assert_gone(info)
    again = up(tmp_path / "sb")
    try:
        assert "survivor" in {n.metadata.name for n in core(tmp_path / "sb").list_namespace().items}
    finally:
        dr("sandbox", "down", "--dir", str(tmp_path / "sb"))
    assert_gone(again)


def test_fault_knobs_change_while_running(tmp_path: Path) -> None:
    """--api-error-rate 1 makes every request fail with 5xx/429; `dr sandbox faults` turns it off live."""
    info = up(tmp_path / "sb", "--api-error-rate", "1")
    try:
        with pytest.raises(kubernetes.client.ApiException) as failed:
            core(tmp_path / "sb").list_namespace(_request_timeout=5)
        assert failed.value.status in (429, 500, 503)
        assert (
            0
            == dr(
                "sandbox", "faults", "--dir", str(tmp_path / "sb"), "--api-error-rate", "0", "--api-latency-ms", "200"
            ).exit_code
        )
        time.sleep(0.5)
        start = time.monotonic()
        core(tmp_path / "sb").list_namespace()
        assert time.monotonic() - start >= 0.2
    finally:
        dr("sandbox", "down", "--dir", str(tmp_path / "sb"))
    assert_gone(info)


VAULT = """\
apiVersion: v1
kind: Namespace
metadata: {name: vault}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: vault, namespace: vault}
spec:
  replicas: 1
  serviceName: vault-internal
  selector: {matchLabels: {app.kubernetes.io/name: vault, component: server}}
  template:
    metadata: {labels: {app.kubernetes.io/name: vault, component: server}}
    spec: {containers: [{name: vault, image: "hashicorp/vault:1.18.1"}]}
  volumeClaimTemplates:
    - metadata: {name: data}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""


def test_vault_pods_are_real_openbao_and_down_stops_them(tmp_path: Path) -> None:
    """A Vault StatefulSet's pod is a real OpenBao that `dr vault status` reaches through DIR/dr.yaml; down
    stops it even after the sandbox process itself was SIGKILLed."""
    info = up(tmp_path / "sb")
    manifest = tmp_path / "vault.yaml"
    manifest.write_text(VAULT)
    kubectl = ["kubectl", "--kubeconfig", str(tmp_path / "sb" / "kubeconfig"), "apply"]
    assert 0 == subprocess.run([*kubectl, "-f", str(manifest)], capture_output=True, timeout=60, check=False).returncode
    config = str(tmp_path / "sb" / "dr.yaml")
    deadline = time.monotonic() + 30
    while True:  # the sandbox writes the pod's address into dr.yaml once the pod runs, then OpenBao answers
        status = dr("--config", config, "vault", "status", "-o", "json")
        nodes = json.loads(status.stdout)["nodes"] if status.exit_code in (0, 1) and status.stdout else []
        if (nodes and nodes[0]["role"] != "unreachable") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (node,) = nodes
    assert "uninitialized" == node["role"]
    assert 1 == status.exit_code  # not initialised yet: not healthy
    children = json.loads((tmp_path / "sb" / "children.json").read_text())
    bao_pids = [p for p in children if p != info["pid"] and b"bao" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(bao_pids) == 1
    plane = [p for p in children if p != info["pid"] and p not in bao_pids]
    assert 4 == len(plane)  # kine, kube-apiserver, kube-controller-manager, kube-scheduler
    os.kill(int(info["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    assert alive(bao_pids[0])  # the OpenBao process outlives a crashed sandbox process...
    assert all(alive(p) for p in plane)  # ...and so does the control plane...
    assert 0 == dr("sandbox", "down", "--dir", str(tmp_path / "sb")).exit_code
    assert not alive(bao_pids[0])  # ...and down still stops them
    assert not any(alive(p) for p in plane)
    assert not listening(node["address"].replace("http://", "https://"))
    assert_gone(info)


def test_a_port_forward_reaches_a_vault_pod_through_the_emulated_api(tmp_path: Path) -> None:
    """From outside a real cluster pod IPs do not route: dr reaches Vault through pods/portforward instead.

    On the emulator only: the real API server forwards to the node's kubelet API, which the sandbox's node
    agent does not serve (yet).
    """
    up(tmp_path / "sb", "--backend", "emulated")
    manifest = tmp_path / "vault.yaml"
    manifest.write_text(VAULT)
    kubectl = ["kubectl", "--kubeconfig", str(tmp_path / "sb" / "kubeconfig"), "apply", "--validate=false"]
    assert 0 == subprocess.run([*kubectl, "-f", str(manifest)], capture_output=True, timeout=60, check=False).returncode
    api = kube.Kube(tmp_path / "sb" / "kubeconfig")
    pod = eventually(
        lambda: next((p for p in api.objects("v1", "Pod", "vault") if (p.get("status") or {}).get("podIP")), None),
        "vault-0 with an address",
    )
    address = api.pod_address(pod, 8200, direct=False)
    assert address.startswith("http://127.0.0.1:")
    assert pod["status"]["podIP"] not in address
    node = vault.VaultNode(address)

    def uninitialised() -> bool:
        try:
            return 501 == node.health_code()
        except errors.TransientError:
            return False  # OpenBao is still starting behind the tunnel

    eventually(uninitialised, "an uninitialised node's answer through the tunnel")
    for _ in range(3):  # every connection is its own stream; the forward stays up between them
        assert not node.seal_status().initialized
    assert address == api.pod_address(pod, 8200, direct=False)  # one forward per pod port


def test_the_real_backend_without_the_eso_binary_names_it_and_make_testbed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A testbed built before ESO joined it (or half built): `up --backend real` says what is missing."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in sandbox_process.CONTROL_PLANE:
        (tools / name).symlink_to(sandbox_process.TESTBED_BIN / name)
    monkeypatch.setattr(sandbox_process, "TESTBED_BIN", tools)
    assert not sandbox_process.testbed_built()
    with pytest.raises(errors.ConfigError) as refused:
        sandbox_process.up(tmp_path / "sb", backend="real")
    assert "external-secrets missing from" in refused.value.message
    assert "kube-apiserver" not in refused.value.message
    assert "make testbed" in (refused.value.hint or "")
