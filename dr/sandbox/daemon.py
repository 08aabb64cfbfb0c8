"""The sandbox process: serves the emulated API and runs the controllers from a directory, across restarts.

Everything lives in the sandbox dir: the CA, the admin token and the
service-account signing key (kept so that kubeconfigs and OpenBao's auth
config stay valid across a restart), the API objects (`state.json`, flushed
in the background and on shutdown), `settings.json` (repositories, pod
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
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dr import files
from dr.adapters import certs
from dr.sandbox import apiserver, argocd, eso, kube, loop, vaultpods, workloads

FLUSH_EVERY = 0.2


def _secret_file(path: Path, make: Any) -> bytes:
    if path.exists():
        return path.read_bytes()
    data: bytes = make()
    files.write_atomic(path, data)
    return data


def _signing_key(path: Path) -> rsa.RSAPrivateKey:
    def make() -> bytes:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    loaded = serialization.load_pem_private_key(_secret_file(path, make), password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return loaded


def load_state(api: apiserver.ApiServer, path: Path) -> None:
    """Put saved objects back (CRDs first, so that their types are servable again)."""
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return
    with api.store.lock:
        api.store.objects.clear()
        for item in saved["objects"]:
            key = tuple(item["key"])
            api.store.objects[key] = item["object"]
            if key[1] == "customresourcedefinitions":
                api.registry.add_crd(item["object"])
        api.store.rv = max(api.store.rv, int(saved["rv"]))


def save_state(api: apiserver.ApiServer, path: Path) -> None:
    with api.store.lock:
        data = {"rv": api.store.rv, "objects": [{"key": list(k), "object": o} for k, o in api.store.objects.items()]}
        payload = json.dumps(data).encode()
    files.write_atomic(path, payload)


def apply_faults(api: apiserver.ApiServer, knobs: Knobs, path: Path) -> None:
    try:
        faults = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return
    api.faults.latency_ms = int(faults.get("api_latency_ms", 0))
    api.faults.error_rate = float(faults.get("api_error_rate", 0.0))
    api.faults.drop_watches = bool(faults.get("drop_watches", False))
    knobs.failing = set(faults.get("fail_workloads") or [])
    knobs.eso_failing = bool(faults.get("eso_failing", False))


def _record_children(directory: Path, pids: list[int]) -> None:
    """Add pids to children.json, which `dr sandbox down` kills even if this process was SIGKILLed."""
    path = directory / "children.json"
    try:
        known: list[int] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        known = []
    files.write_atomic(path, json.dumps(sorted({*known, *pids})).encode())


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
    api: apiserver.ApiServer, directory: Path, knobs: Knobs, stop: threading.Event
) -> vaultpods.VaultPods:
    """The simulated controllers, each on its own HTTPS client to the API, like pods of a real cluster."""
    client = kube.Kube(api.url, api.admin_token, str(api.ca.cert_path))
    vault = vaultpods.VaultPods(on_spawn=lambda pid: _record_children(directory, [pid]))
    controllers: list[loop.Controller] = [
        workloads.Workloads(
            client.clone(),
            stop,
            network=workloads.Network(directory / "network.json"),
            volumes=directory / "volumes",
            ready_seconds=lambda: knobs.ready_seconds,
            failing=lambda: knobs.failing,
            runtimes=[vault],
        ),
        argocd.ArgoCD(client.clone(), stop, repos=lambda: knobs.repos, refresh_seconds=lambda: knobs.refresh_seconds),
        eso.ExternalSecrets(client.clone(), stop, failing=lambda: knobs.eso_failing),
    ]
    for controller in controllers:
        controller.start()
    return vault


def run_actions(directory: Path, vault: vaultpods.VaultPods) -> None:
    """One-shot faults (`dr sandbox faults --kill-pod`): a request file in, a result file out."""
    inbox = directory / "actions"
    if not inbox.is_dir():
        return
    for request in sorted(inbox.glob("*.json")):
        try:
            action = json.loads(request.read_text())
            namespace, _, name = str(action["pod"]).partition("/")
            done = vault.signal(namespace, name, kill=action["action"] == "kill")
            result = {"ok": done, "message": "" if done else f"no Vault pod {action['pod']} runs in this sandbox"}
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


def serve(directory: Path, *, port: int = 0) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = os.open(directory / "sandbox.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another sandbox process serves {directory}") from None
    ca = certs.CertificateAuthority(directory / "ca")
    token = _secret_file(directory / "admin.token", lambda: secrets.token_urlsafe(32).encode()).decode()
    previous = _previous_port(directory)
    api = _listen(ca, port or previous, token, _signing_key(directory / "sa.key"))
    load_state(api, directory / "state.json")
    knobs = Knobs(directory)
    apply_faults(api, knobs, directory / "faults.json")
    api.serve_in_thread()
    kubeconfig = directory / "kubeconfig"
    files.write_atomic(kubeconfig, yaml.safe_dump(api.kubeconfig()).encode())
    stop = threading.Event()
    vault = start_platform(api, directory, knobs, stop)
    written = _sync_dr_config(directory, vault, None)
    info = {
        "pid": os.getpid(),
        "url": api.url,
        "port": api.port,
        "started_at": time.time(),
        "kubeconfig": str(kubeconfig),
    }
    files.write_atomic(directory / "sandbox.json", json.dumps(info).encode())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    flushed = -1
    while not stop.wait(FLUSH_EVERY):
        apply_faults(api, knobs, directory / "faults.json")
        run_actions(directory, vault)
        written = _sync_dr_config(directory, vault, written)
        if api.store.rv != flushed:
            flushed = api.store.rv
            save_state(api, directory / "state.json")
    save_state(api, directory / "state.json")
    api.shutdown()
    vault.stop_all()
    with contextlib.suppress(FileNotFoundError):
        (directory / "sandbox.json").unlink()
    os.close(lock)


def _previous_port(directory: Path) -> int:
    try:
        return int(json.loads((directory / "last-port").read_text()))
    except (FileNotFoundError, ValueError):
        return 0


def _listen(ca: certs.CertificateAuthority, port: int, token: str, key: rsa.RSAPrivateKey) -> apiserver.ApiServer:
    """Reuse the previous port when free, so that URLs already handed out keep working."""
    try:
        api = apiserver.ApiServer(ca, port=port, admin_token=token, signing_key=key)
    except OSError:
        api = apiserver.ApiServer(ca, port=0, admin_token=token, signing_key=key)
    files.write_atomic(ca.directory.parent / "last-port", str(api.port).encode())
    return api


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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every thread's stack to the log
    serve(args.dir.resolve(), port=args.port)
