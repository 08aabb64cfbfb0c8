"""The Vault StatefulSet's pods are real OpenBao processes.

A pod labelled as a Vault (or OpenBao) chart's server pod runs `bao server`
on the pod's own loopback address, ports 8200/8201 as in the chart, with its
Raft data in the pod's `data` volume (a directory that survives the pod and
goes with its PVC) and `retry_join` to every other replica's address. Like
the chart's readiness probe, the pod is Ready only while OpenBao answers
`sys/health` as an unsealed node, and like Vault's Kubernetes service
registration it labels its own pod `vault-active`, `vault-sealed`,
`vault-initialized` (the `-active` Service selects on that). A process that
exits is a container crash: the kubelet stand-in counts the restart and
starts it again, sealed, on the same data.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dr.adapters import localbao
from dr.sandbox import workloads

CHARTS = ("vault", "openbao")
READY_CODES = (200, 429, 472, 473)  # active, standby, DR secondary, performance standby
RESTART_DELAY = 1.0


@dataclass
class _Pod:
    node: localbao.BaoNode
    cluster: localbao.BaoCluster
    chart: str
    restarts: int = 0
    last_exit: int | None = None
    exited_at: float | None = None


def _health(address: str) -> tuple[int, dict[str, Any]]:
    """sys/health's status code and body; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"{address}/v1/sys/health", timeout=0.5) as answer:  # noqa: S310 - our loopback
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        return exc.code, body
    except (OSError, ValueError):
        return 0, {}


def _is_bao(pid: int) -> bool:
    try:
        return b"bao" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class VaultPods:
    """The `workloads.Runtime` for Vault server pods."""

    def __init__(self, on_spawn: Callable[[int], None]) -> None:
        self.pods: dict[str, _Pod] = {}
        self.on_spawn = on_spawn
        self.lock = threading.Lock()
        self.closed = False

    def claims(self, pod: dict[str, Any]) -> bool:
        labels = pod["metadata"].get("labels") or {}
        return labels.get("app.kubernetes.io/name") in CHARTS and labels.get("component") == "server"

    def ensure(self, pod: dict[str, Any], volumes: dict[str, Path], peers: list[str]) -> workloads.Container:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        key = f"{namespace}/{name}"
        data = volumes.get("data")
        if data is None:
            return workloads.Container(ready=False, running=False, waiting_reason="ContainerCreating")
        with self.lock:
            if self.closed:  # the sandbox is stopping: a pass still running must not start a server now
                return workloads.Container(ready=False, running=False, waiting_reason="ContainerCreating")
            state = self.pods.get(key)
            if state is None:
                state = self.pods[key] = self._start(pod, data, peers)
            node = state.node
            if not node.running and node.process is not None:
                if state.exited_at is None:  # just noticed: a crash (or a kill) of the container
                    state.exited_at = time.monotonic()
                    code = node.process.returncode
                    state.last_exit = (
                        128 - code if code < 0 else code
                    )  # a signal shows as 128+n, as the kubelet reports
                    state.restarts += 1
                if time.monotonic() - state.exited_at < RESTART_DELAY:
                    return self._container(state, 0, {}, running=False)
                state.exited_at = None
                self._spawn(state)
        code, body = _health(node.address)
        return self._container(state, code, body, running=True)

    def _container(self, state: _Pod, code: int, body: dict[str, Any], *, running: bool) -> workloads.Container:
        chart = state.chart
        labels = {f"{chart}-active": "true" if code == 200 else "false"}
        if body:
            labels.update(
                {
                    f"{chart}-initialized": str(bool(body.get("initialized"))).lower(),
                    f"{chart}-sealed": str(bool(body.get("sealed"))).lower(),
                    f"{chart}-version": str(body.get("version", "")).replace("+", "_"),
                }
            )
        return workloads.Container(
            ready=running and code in READY_CODES,
            running=running,
            restarts=state.restarts,
            last_exit=state.last_exit,
            waiting_reason="" if running else "CrashLoopBackOff",
            labels=labels,
        )

    def _start(self, pod: dict[str, Any], data: Path, peers: list[str]) -> _Pod:
        name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
        labels = pod["metadata"].get("labels") or {}
        base = name.rpartition("-")[0]
        node = localbao.BaoNode(name, ip, 8200, 8201, data)
        others = [
            localbao.BaoNode(f"{base}-{i}", peer, 8200, 8201, data.parent / f"unused-{i}")
            for i, peer in enumerate(peers)
            if peer != ip
        ]
        cluster = localbao.BaoCluster(data, size=len(peers) or 1, generate_root=True, nodes=[node, *others])
        state = _Pod(node, cluster, str(labels.get("app.kubernetes.io/name")))
        self._kill_leftover(data)
        self._spawn(state)
        return state

    def _kill_leftover(self, data: Path) -> None:
        """A previous sandbox process died without stopping this pod's server: it still holds the ports."""
        try:
            pid = int((data / "bao.pid").read_text())
        except (FileNotFoundError, ValueError):
            return
        if _is_bao(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while _is_bao(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def _spawn(self, state: _Pod) -> None:
        state.cluster.start_node(state.node)
        assert state.node.process is not None
        (state.node.root / "bao.pid").write_text(str(state.node.process.pid))
        self.on_spawn(state.node.process.pid)

    def release(self, namespace: str, name: str) -> None:
        """The pod is gone: stop its server (its data stays with the claim)."""
        with self.lock:
            state = self.pods.pop(f"{namespace}/{name}", None)
        if state is not None:
            state.cluster.stop()

    def signal(self, namespace: str, name: str, *, kill: bool) -> bool:
        """A fault: SIGKILL (a crash) or SIGTERM (a clean container restart). False when no such pod runs."""
        with self.lock:
            state = self.pods.get(f"{namespace}/{name}")
        if state is None or not state.node.running or state.node.process is None:
            return False
        state.node.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        state.node.process.wait(timeout=15)
        return True

    def stop_all(self) -> None:
        with self.lock:
            self.closed = True
            states = list(self.pods.values())
            self.pods.clear()
        for state in states:
            state.cluster.stop()
