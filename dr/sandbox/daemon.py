"""The sandbox process: serves the emulated API from a directory, and survives its own restart.

Everything lives in the sandbox dir: the CA, the admin token and the
service-account signing key (kept so that kubeconfigs and OpenBao's auth
config stay valid across a restart), the API objects (`state.json`, flushed
in the background and on shutdown), the fault knobs (`faults.json`, re-read
while running), and `sandbox.json`, written once the API serves — the
readiness marker that `dr sandbox up` waits for. An flock on `sandbox.lock`
keeps two processes off one dir.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
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
from dr.adapters import certs, localbao
from dr.sandbox import apiserver

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


def apply_faults(api: apiserver.ApiServer, path: Path) -> None:
    try:
        knobs = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return
    api.faults.latency_ms = int(knobs.get("api_latency_ms", 0))
    api.faults.error_rate = float(knobs.get("api_error_rate", 0.0))
    api.faults.drop_watches = bool(knobs.get("drop_watches", False))


def _record_children(directory: Path, pids: list[int]) -> None:
    """Add pids to children.json, which `dr sandbox down` kills even if this process was SIGKILLed."""
    path = directory / "children.json"
    try:
        known: list[int] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        known = []
    files.write_atomic(path, json.dumps(sorted({*known, *pids})).encode())


def start_vault(directory: Path, replicas: int) -> localbao.BaoCluster | None:
    """Real OpenBao Raft nodes for the sandbox, on the same ports and data across restarts.

    (They become the Vault StatefulSet's pods once the simulated controllers exist.)
    """
    if replicas <= 0:
        return None
    root = directory / "vault"
    layout = root / "nodes.json"
    try:
        saved = json.loads(layout.read_text())
        nodes = [
            localbao.BaoNode(n["node_id"], n["host"], n["api_port"], n["cluster_port"], root / n["node_id"])
            for n in saved
        ]
    except (FileNotFoundError, ValueError, KeyError):
        nodes = []
    if nodes and len(nodes) != replicas:
        raise SystemExit(f"this sandbox's Vault has {len(nodes)} node(s), not {replicas}: use a new sandbox dir")
    cluster = localbao.BaoCluster(root, size=replicas, generate_root=True, nodes=nodes)
    if not nodes:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        files.write_atomic(
            layout,
            json.dumps(
                [
                    {"node_id": n.node_id, "host": n.host, "api_port": n.api_port, "cluster_port": n.cluster_port}
                    for n in cluster.nodes
                ]
            ).encode(),
        )
    cluster.start(wait=False)
    _record_children(directory, [n.process.pid for n in cluster.nodes if n.process is not None])
    cluster.wait_listening(timeout=30)
    return cluster


def serve(directory: Path, *, port: int = 0, vault_replicas: int = 0) -> None:
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
    apply_faults(api, directory / "faults.json")
    vault = start_vault(directory, vault_replicas)
    api.serve_in_thread()
    kubeconfig = directory / "kubeconfig"
    files.write_atomic(kubeconfig, yaml.safe_dump(api.kubeconfig()).encode())
    config = _dr_config(directory, vault.addresses if vault else [])
    files.write_atomic(directory / "dr.yaml", yaml.safe_dump(config).encode())
    info = {
        "pid": os.getpid(),
        "url": api.url,
        "port": api.port,
        "started_at": time.time(),
        "kubeconfig": str(kubeconfig),
    }
    files.write_atomic(directory / "sandbox.json", json.dumps(info).encode())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    flushed = -1
    while not stop.wait(FLUSH_EVERY):
        apply_faults(api, directory / "faults.json")
        if api.store.rv != flushed:
            flushed = api.store.rv
            save_state(api, directory / "state.json")
    save_state(api, directory / "state.json")
    api.shutdown()
    if vault is not None:
        vault.stop()
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
    parser.add_argument("--vault-replicas", type=int, default=0)
    args = parser.parse_args()
    serve(args.dir.resolve(), port=args.port, vault_replicas=args.vault_replicas)
