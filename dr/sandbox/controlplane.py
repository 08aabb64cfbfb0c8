"""A real Kubernetes control plane on loopback: kine on SQLite, kube-apiserver, kube-controller-manager, kube-scheduler.

What K3s runs as its control plane, started as four processes from the
binaries `make testbed` builds into `.tools/bin/` (pinned in `testbed/`).
Everything they keep lives under `DIR/control-plane/`: the SQLite database
(kine's, so objects survive a restart of the sandbox), the serving
certificate (signed by the sandbox CA, so every client that trusts the CA
trusts the API), the token file with one identity per component, and each
component's log. The processes get their own sessions: `dr sandbox down`
signals the sandbox's process group, and a storage killed together with the
API server leaves the API server retrying for minutes (TESTBED-FACTS), so
they are stopped here, API first, storage last.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from dr import files
from dr.adapters import certs, sandbox_process

TOOLS = sandbox_process.TESTBED_BIN
BINARIES = sandbox_process.CONTROL_PLANE
NODE = "sandbox"
SERVICE_RANGE = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"
READY_TIMEOUT = 90.0
STOP_GRACE = 5.0
# The identities in the token file: (user, uid, groups). The node agent writes pod and node status as a kubelet.
IDENTITIES = {
    "admin": ("sandbox-admin", "admin", "system:masters"),
    "node": (f"system:node:{NODE}", "node", "system:nodes"),
    "controller-manager": ("system:kube-controller-manager", "kcm", ""),
    "scheduler": ("system:kube-scheduler", "scheduler", ""),
}


class ControlPlaneError(Exception):
    """A component that is missing, exits, or does not become ready; the message names its log."""


def available() -> bool:
    return sandbox_process.testbed_built()


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class ControlPlane:
    """The four processes; `start()` returns once the API answers /readyz."""

    def __init__(
        self,
        directory: Path,
        ca: certs.CertificateAuthority,
        sa_key: Path,
        admin_token: str,
        *,
        on_spawn: Callable[[int], None] = lambda pid: None,
    ) -> None:
        self.directory = directory / "control-plane"
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ca, self.sa_key = ca, sa_key
        self.on_spawn = on_spawn
        self.tokens = self._tokens(admin_token)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def token(self, identity: str) -> str:
        return self.tokens[identity]

    def _tokens(self, admin_token: str) -> dict[str, str]:
        """One bearer token per component, kept across restarts (kubeconfigs handed out stay valid)."""
        path = self.directory / "tokens.yaml"
        try:
            saved: dict[str, str] = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            saved = {}
        tokens = {name: saved.get(name) or secrets.token_urlsafe(32) for name in IDENTITIES}
        tokens["admin"] = admin_token
        if tokens != saved:
            files.write_atomic(path, yaml.safe_dump(tokens).encode())
        lines = [f'{tokens[name]},{user},{uid},"{groups}"' for name, (user, uid, groups) in IDENTITIES.items()]
        files.write_atomic(self.directory / "tokens.csv", ("\n".join(lines) + "\n").encode())
        return tokens

    def kubeconfig(self, identity: str, server: str | None = None) -> Path:
        """A kubeconfig file for one identity, straight to the API server (not through the fault proxy)."""
        path = self.directory / f"{identity}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "sandbox",
            "clusters": [
                {
                    "name": "sandbox",
                    "cluster": {"server": server or self.url, "certificate-authority": str(self.ca.cert_path)},
                }
            ],
            "users": [{"name": identity, "user": {"token": self.tokens[identity]}}],
            "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": identity}}],
        }
        files.write_atomic(path, yaml.safe_dump(config).encode())
        return path

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        missing = [name for name in sandbox_process.TESTBED if not (TOOLS / name).is_file()]
        if missing:
            raise ControlPlaneError(f"not built: {', '.join(missing)} in {TOOLS}; run `make testbed`")
        try:
            storage = self._start_kine()
            self._start_apiserver(storage)
            self._await_ready()
            self._start_controller_manager()
            self._start_scheduler()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.directory / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [str(TOOLS / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # stopped in order by stop(), not by a signal to the sandbox's group
            env={**os.environ, **(env or {})},
        )
        log.close()
        self.on_spawn(proc.pid)
        self.procs.append((name, proc))
        return proc

    def _start_kine(self) -> str:
        port = _free_port()
        database = self.directory / "state.db"
        self._spawn(
            "kine",
            [
                "--endpoint",
                f"sqlite://{database}?_journal=WAL&cache=shared&_busy_timeout=30000",
                "--listen-address",
                f"127.0.0.1:{port}",
                "--metrics-bind-address",
                "0",  # its default, :8080 on every address, collides with the next sandbox's
            ],
        )
        self._await_port("kine", port)
        return f"http://127.0.0.1:{port}"

    def _serving_port(self) -> int:
        """The previous run's port when free: the URL in the kubeconfig of OpenBao's auth config stays valid."""
        try:
            previous = int((self.directory / "port").read_text())
        except (FileNotFoundError, ValueError):
            previous = 0
        port = previous if previous and _port_free("127.0.0.1", previous) else _free_port()
        files.write_atomic(self.directory / "port", str(port).encode())
        return port

    def _start_apiserver(self, storage: str) -> None:
        self.port = self._serving_port()
        serving = self.ca.issue(
            "kube-apiserver",
            hosts=[
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "10.96.0.1",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={storage}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                # Loopback is not a routable address for the endpoints of default/kubernetes.
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.directory / 'certs'}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={self.ca.cert_path}",
                f"--token-auth-file={self.directory / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={self.sa_key}",
                f"--service-account-signing-key-file={self.sa_key}",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _start_controller_manager(self) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig('controller-manager')}",
                f"--authentication-kubeconfig={self.kubeconfig('controller-manager')}",
                f"--authorization-kubeconfig={self.kubeconfig('controller-manager')}",
                f"--service-account-private-key-file={self.sa_key}",
                f"--root-ca-file={self.ca.cert_path}",
                "--use-service-account-credentials",
                "--controllers=*",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                f"--cluster-signing-cert-file={self.ca.cert_path}",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _start_scheduler(self) -> None:
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={self.kubeconfig('scheduler')}",
                f"--authentication-kubeconfig={self.kubeconfig('scheduler')}",
                f"--authorization-kubeconfig={self.kubeconfig('scheduler')}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _check_running(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.directory / f"{name}.log").read_text(errors="replace")[-1500:]
                raise ControlPlaneError(
                    f"{name} exited ({proc.returncode}); its log is {self.directory / f'{name}.log'}:\n{tail}"
                )

    def _await_port(self, name: str, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_running()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
            time.sleep(0.05)
        raise ControlPlaneError(f"{name} did not listen on 127.0.0.1:{port} in {timeout:.0f} s; read {name}.log")

    def _await_ready(self) -> None:
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        request = urllib.request.Request(  # noqa: S310 - https to our own loopback API server
            f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.tokens['admin']}"}
        )
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            self._check_running()
            try:
                with urllib.request.urlopen(request, timeout=2, context=context) as reply:  # noqa: S310 - https
                    if reply.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = exc.read().decode(errors="replace")[-500:]
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.1)
        log = self.directory / "kube-apiserver.log"
        raise ControlPlaneError(f"kube-apiserver was not ready in {READY_TIMEOUT:.0f} s ({last}); read {log}")

    def alive(self) -> list[str]:
        return [name for name, proc in self.procs if proc.poll() is None]

    def stop(self) -> None:
        """API clients first, then the API server, storage last; SIGKILL after a grace period.

        The API server is killed outright: its graceful shutdown waits up to a minute for long-running
        requests (watches) to end, and it holds no state of its own (everything is in kine's database,
        which SIGKILL at any moment leaves consistent: SQLite's WAL commits are atomic).
        """
        for name, proc in reversed(self.procs):
            if proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL if name == "kube-apiserver" else signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self.procs.clear()
