"""The sandbox process: starts the Kubernetes API (`backends`) and runs the node agent and controllers on it.

Everything lives in the sandbox dir: the CA, the admin token and the
service-account signing key (kept so that kubeconfigs and OpenBao's auth
config stay valid across a restart), the API objects (the real control
plane's SQLite database in `control-plane/`, or the emulator's `state.json`),
`settings.json` (repositories, pod
readiness delay; written by `dr sandbox up`), the fault knobs (`faults.json`,
re-read while running), one-shot pod faults (`actions/*.json`, answered with
`*.done`), pod addresses (`network.json`), volumes (`volumes/NS/CLAIM`), and
`sandbox.json`, written once the API serves — the readiness marker that
`dr sandbox up` waits for. An flock on `sandbox.lock` keeps two processes off
one dir.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import fcntl
import json
import logging
import os
import secrets
import signal
import threading
import time
import typing
from pathlib import Path
from typing import Any, Protocol

import yaml

from dr import files
from dr.adapters import certs, sandbox_process
from dr.sandbox import argocd, backends, containers, controlplane, eso, kube, loop, proxy, vaultpods, workloads

FLUSH_EVERY = 0.2
log = logging.getLogger("dr.sandbox")


def apply_faults(target: proxy.Faults, knobs: Knobs, path: Path) -> None:
    try:
        faults = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return
    target.latency_ms = int(faults.get("api_latency_ms", 0))
    target.error_rate = float(faults.get("api_error_rate", 0.0))
    target.drop_watches = bool(faults.get("drop_watches", False))
    knobs.failing = set(faults.get("fail_workloads") or [])
    knobs.eso_failing = bool(faults.get("eso_failing", False))


@typing.runtime_checkable
class Signalled(Protocol):
    """A runtime whose pods' processes a fault can kill (SIGKILL) or stop (SIGTERM)."""

    def signal(self, namespace: str, name: str, *, kill: bool) -> bool: ...


class Knobs:
    """The live settings and fault knobs the controllers read on every pass."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            settings = json.loads((directory / "settings.json").read_text())
        except (FileNotFoundError, ValueError):
            settings = {}
        self.repos: dict[str, str] = dict(settings.get("repos") or {})
        self.ready_seconds = float(settings.get("pod_ready_seconds", 1.0))
        self.refresh_seconds = float(settings.get("refresh_seconds", 3.0))
        self.failing: set[str] = set()
        self.eso_failing = False


def start_platform(
    url: str,
    token: str,
    ca: certs.CertificateAuthority,
    directory: Path,
    knobs: Knobs,
    stop: threading.Event,
    *,
    kubelet_only: bool,
) -> tuple[vaultpods.VaultPods, list[workloads.Runtime]]:
    """The simulated controllers, each on its own HTTPS client to the API, like pods of a real cluster.

    Returns the Vault pods (for the fault actions) and every runtime (to stop their processes at the end).
    """
    client = kube.Kube(url, token, str(ca.cert_path))
    spawned = lambda pid: sandbox_process.record_children(directory, [pid])  # noqa: E731 - one callback, two runtimes
    vault = vaultpods.VaultPods(on_spawn=spawned)
    runtimes: list[workloads.Runtime] = [vault]
    if kubelet_only:  # dr's pods and ESO's controller run for real where the real controllers make them
        address = url.removeprefix("https://")
        cut_off = lambda program: knobs.eso_failing and program == "external-secrets"  # noqa: E731
        runtimes.append(containers.Processes(client.clone(), directory / "pods", lambda: address, spawned, cut_off))
    controllers: list[loop.Controller] = [
        workloads.Workloads(
            client.clone(),
            stop,
            network=workloads.Network(directory / "network.json"),
            volumes=directory / "volumes",
            ready_seconds=lambda: knobs.ready_seconds,
            failing=lambda: knobs.failing,
            runtimes=runtimes,
            kubelet_only=kubelet_only,
        ),
        argocd.ArgoCD(client.clone(), stop, repos=lambda: knobs.repos, refresh_seconds=lambda: knobs.refresh_seconds),
    ]
    if not kubelet_only:  # the emulator's stand-in; on the real control plane the ESO pod runs the real operator
        controllers.append(eso.ExternalSecrets(client.clone(), stop, failing=lambda: knobs.eso_failing))
    for controller in controllers:
        controller.start()
    return vault, runtimes


def run_actions(directory: Path, runtimes: list[workloads.Runtime]) -> None:
    """One-shot faults (`dr sandbox faults --kill-pod`): a request file in, a result file out."""
    inbox = directory / "actions"
    if not inbox.is_dir():
        return
    for request in sorted(inbox.glob("*.json")):
        try:
            action = json.loads(request.read_text())
            namespace, _, name = str(action["pod"]).partition("/")
            kill = action["action"] == "kill"
            done = any(r.signal(namespace, name, kill=kill) for r in runtimes if isinstance(r, Signalled))
            result = {"ok": done, "message": "" if done else f"no pod {action['pod']} runs a process in this sandbox"}
        except (ValueError, KeyError, OSError) as exc:
            result = {"ok": False, "message": f"bad action request: {exc}"}
        files.write_atomic(request.with_suffix(".done"), json.dumps(result).encode())
        request.unlink(missing_ok=True)


def _sync_dr_config(directory: Path, vault: vaultpods.VaultPods, written: list[str] | None) -> list[str]:
    """Keep DIR/dr.yaml's Vault addresses on the Vault pods as they come and go."""
    addresses = sorted(p.node.address for p in list(vault.pods.values()))
    if addresses != written:
        files.write_atomic(directory / "dr.yaml", yaml.safe_dump(_dr_config(directory, addresses)).encode())
    return addresses


def serve(directory: Path, *, port: int = 0, backend: str = "auto") -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = os.open(directory / "sandbox.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another sandbox process serves {directory}") from None
    ca = certs.CertificateAuthority(directory / "ca")
    token = backends.secret_file(directory / "admin.token", lambda: secrets.token_urlsafe(32).encode()).decode()
    api = backends.make(
        backend, directory, ca, token, port, on_spawn=lambda pid: sandbox_process.record_children(directory, [pid])
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    vault: vaultpods.VaultPods | None = None
    runtimes: list[workloads.Runtime] = []
    try:
        api.start()
        knobs = Knobs(directory)
        apply_faults(api.faults, knobs, directory / "faults.json")
        kubeconfig_path = directory / "kubeconfig"
        files.write_atomic(kubeconfig_path, yaml.safe_dump(api.kubeconfig).encode())
        vault, runtimes = start_platform(api.url, token, ca, directory, knobs, stop, kubelet_only=api.name == "real")
        written = _sync_dr_config(directory, vault, None)
        info = {
            "pid": os.getpid(),
            "url": api.url,
            "port": int(api.url.rsplit(":", 1)[1]),
            "backend": api.name,
            "started_at": time.time(),
            "kubeconfig": str(kubeconfig_path),
        }
        files.write_atomic(directory / "sandbox.json", json.dumps(info).encode())
        log.info("sandbox serving %s on the %s control plane", api.url, api.name)
        while not stop.wait(FLUSH_EVERY):
            apply_faults(api.faults, knobs, directory / "faults.json")
            run_actions(directory, runtimes)
            written = _sync_dr_config(directory, vault, written)
            api.tick()
    except controlplane.ControlPlaneError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
    finally:
        stop.set()
        with contextlib.suppress(FileNotFoundError):
            (directory / "sandbox.json").unlink()
        for runtime in runtimes:
            runtime.stop_all()
        api.stop()
        os.close(lock)


def _dr_config(directory: Path, vault_addresses: list[str]) -> dict[str, Any]:
    """A configuration for `dr` commands against this sandbox."""
    config: dict[str, Any] = {
        "state_dir": str(directory / "dr-state"),
        "cluster": {"name": "sandbox", "provider": "sandbox", "kubeconfig": str(directory / "kubeconfig")},
        "snapshots": {"store": str(directory / "snapshots")},
    }
    if vault_addresses:
        config["vault"] = {"addresses": vault_addresses}
    return config


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m dr.sandbox")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backend", choices=["auto", "real", "emulated"], default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every thread's stack to the log
    serve(args.dir.resolve(), port=args.port, backend=args.backend)
