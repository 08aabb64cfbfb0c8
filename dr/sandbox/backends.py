"""The sandbox's Kubernetes API, one of two: the real control plane behind the fault proxy, or the emulator.

Both answer the same questions for the daemon and for tests (`url`, `token`,
`ca`, `kubeconfig`, `faults`, `start`, `tick`, `stop`), so everything above
them (the node agent, Argo CD, External Secrets, Vault pods, `dr`) runs the
same on either. `real` is the default wherever `make testbed` built the
binaries; `emulated` (the project's own API in this process, state in
`state.json`) is the fallback for a machine without a Go toolchain.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dr import files
from dr.adapters import certs
from dr.sandbox import apiserver, controlplane, kube, proxy


def secret_file(path: Path, make: Any) -> bytes:
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

    loaded = serialization.load_pem_private_key(secret_file(path, make), password=None)
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


class Emulated:
    """The fallback where no control plane is built: the project's own API emulator, in this process."""

    name = "emulated"

    def __init__(
        self,
        directory: Path,
        ca: certs.CertificateAuthority,
        token: str,
        port: int,
        on_spawn: Callable[[int], None] = lambda pid: None,
    ) -> None:
        self.directory = directory
        self.token = token
        self.api = _listen(ca, port or _previous_port(directory), token, _signing_key(directory / "sa.key"))
        load_state(self.api, directory / "state.json")
        self.faults = self.api.faults
        self.ca = ca
        self.url = self.api.url
        self.kubeconfig = self.api.kubeconfig()
        self._flushed = -1

    def start(self) -> None:
        self.api.serve_in_thread()

    def tick(self) -> None:
        if self.api.store.rv != self._flushed:
            self._flushed = self.api.store.rv
            save_state(self.api, self.directory / "state.json")

    def stop(self) -> None:
        save_state(self.api, self.directory / "state.json")
        self.api.shutdown()


class Real:
    """kine, kube-apiserver, kube-controller-manager and kube-scheduler, reached through the fault proxy."""

    name = "real"

    def __init__(
        self,
        directory: Path,
        ca: certs.CertificateAuthority,
        token: str,
        port: int,
        on_spawn: Callable[[int], None] = lambda pid: None,
    ) -> None:
        _signing_key(directory / "sa.key")  # made once; the API server signs ServiceAccount tokens with it
        self.plane = controlplane.ControlPlane(directory, ca, directory / "sa.key", token, on_spawn=on_spawn)
        self.directory, self.ca, self.token, self.port = directory, ca, token, port or _previous_port(directory)
        self.url = ""
        self.kubeconfig: dict[str, Any] = {}

    def start(self) -> None:
        self.plane.start()
        try:
            front = proxy.Proxy(self.ca, self.plane.port, port=self.port)
        except OSError:
            front = proxy.Proxy(self.ca, self.plane.port)
        files.write_atomic(self.directory / "last-port", str(front.port).encode())
        front.serve_in_thread()
        self.front, self.faults, self.url = front, front.faults, front.url
        self.kubeconfig = kube.config(self.url, self.ca.pem, self.plane.token("admin"))

    def tick(self) -> None:
        gone = sorted(set(controlplane.BINARIES) - set(self.plane.alive()))
        if gone:
            raise controlplane.ControlPlaneError(f"{', '.join(gone)} exited; read {self.plane.directory}/*.log")

    def stop(self) -> None:
        if hasattr(self, "front"):
            self.front.shutdown()
        self.plane.stop()


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


def make(
    name: str,
    directory: Path,
    ca: certs.CertificateAuthority,
    token: str,
    port: int = 0,
    on_spawn: Callable[[int], None] = lambda pid: None,
) -> Emulated | Real:
    """`name` is real, emulated or auto (real when built)."""
    if name == "auto":
        name = "real" if controlplane.available() else "emulated"
    return (Real if name == "real" else Emulated)(directory, ca, token, port, on_spawn)
