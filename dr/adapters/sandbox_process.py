"""Starting, finding and stopping a sandbox process — from outside, through its directory and HTTP only.

The rest of `dr` may not import `dr.sandbox`; it starts `python -m dr.sandbox`
as a process, learns where it listens from `sandbox.json`, checks it over
HTTPS with the sandbox's CA, and stops it (and every child it recorded, such
as OpenBao processes) by signal. `down` is idempotent and also cleans up
after a sandbox process that was SIGKILLed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dr import errors, files, waiting

RUNBOOK = "runbooks/cluster.md"


@dataclass(frozen=True)
class SandboxInfo:
    directory: Path
    running: bool
    healthy: bool
    pid: int | None = None
    url: str | None = None
    kubeconfig: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dir": str(self.directory),
            "running": self.running,
            "healthy": self.healthy,
            "pid": self.pid,
            "url": self.url,
            "kubeconfig": str(self.kubeconfig) if self.kubeconfig else None,
        }


def alive(pid: int) -> bool:
    """True while any thread of `pid` runs (a zombie leader whose threads still exit holds its sockets)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/status") as status:  # noqa: PTH123 - a procfs file
            fields = dict(line.split(":", 1) for line in status if ":" in line)
    except OSError:
        return False
    return not (fields.get("State", "").strip().startswith("Z") and fields.get("Threads", "1").strip() in ("0", "1"))


def _healthy(directory: Path, url: str) -> bool:
    context = ssl.create_default_context(cafile=str(directory / "ca" / "ca.crt"))
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2, context=context) as reply:  # noqa: S310 - https
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def status(directory: Path) -> SandboxInfo:
    directory = Path(directory).resolve()
    try:
        info = json.loads((directory / "sandbox.json").read_text())
    except (FileNotFoundError, ValueError):
        return SandboxInfo(directory, running=False, healthy=False)
    pid, url = int(info["pid"]), str(info["url"])
    running = alive(pid)
    return SandboxInfo(directory, running, running and _healthy(directory, url), pid, url, Path(info["kubeconfig"]))


PLATFORM_REPO = "https://github.com/temitayocharles/platform-gitops.git"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "platform"


def set_faults(
    directory: Path,
    *,
    api_latency_ms: int | None = None,
    api_error_rate: float | None = None,
    drop_watches: bool | None = None,
    fail: tuple[str, ...] = (),
    heal: tuple[str, ...] = (),
    eso_failing: bool | None = None,
) -> dict[str, Any]:
    """Change the fault knobs; a running sandbox picks them up within a fraction of a second.

    `fail` and `heal` add and remove NAMESPACE/NAME workloads whose pods crash-loop; `eso_failing` makes
    External Secrets fail every sync, as when its provider is unreachable.
    """
    path = Path(directory) / "faults.json"
    try:
        knobs: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        knobs = {}
    for key, value in (
        ("api_latency_ms", api_latency_ms),
        ("api_error_rate", api_error_rate),
        ("drop_watches", drop_watches),
        ("eso_failing", eso_failing),
    ):
        if value is not None:
            knobs[key] = value
    if not 0 <= float(knobs.get("api_error_rate", 0)) <= 1:
        raise errors.ConfigError("--api-error-rate must be between 0 and 1")
    for name in (*fail, *heal):
        _namespaced(name, "--fail-workload/--heal-workload")
    failing = (set(knobs.get("fail_workloads") or []) | set(fail)) - set(heal)
    knobs["fail_workloads"] = sorted(failing)
    Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
    files.write_atomic(path, json.dumps(knobs).encode())
    return knobs


def _namespaced(name: str, option: str) -> None:
    namespace, _, rest = name.partition("/")
    if not namespace or not rest or "/" in rest:
        raise errors.ConfigError(f"{option} takes NAMESPACE/NAME, not {name!r}", hint="for example vault/vault-0")


def pod_fault(directory: Path, pod: str, *, kill: bool, timeout: float = 20.0) -> None:
    """Kill (SIGKILL, a crash) or restart (SIGTERM) a Vault pod's OpenBao process in a running sandbox."""
    option = "--kill-pod" if kill else "--restart-pod"
    _namespaced(pod, option)
    directory = Path(directory).resolve()
    if not status(directory).healthy:
        raise errors.PermanentError(
            f"no sandbox serves {directory}", hint="start one with `dr sandbox up`", runbook=RUNBOOK
        )
    inbox = directory / "actions"
    inbox.mkdir(mode=0o700, exist_ok=True)
    request = inbox / f"{time.time_ns()}.json"
    files.write_atomic(request, json.dumps({"action": "kill" if kill else "restart", "pod": pod}).encode())
    answer = request.with_suffix(".done")

    def done() -> dict[str, Any] | waiting.Pending:
        try:
            return json.loads(answer.read_text())  # type: ignore[no-any-return]
        except (FileNotFoundError, ValueError):
            return waiting.Pending("waiting for the sandbox to act")

    result = waiting.wait_until(done, what=f"the sandbox to {option[2:]} {pod}", timeout=timeout, interval=0.05)
    answer.unlink(missing_ok=True)
    if not result.get("ok"):
        raise errors.PermanentError(
            str(result.get("message")), hint="list the pods with `kubectl get pods -A`", runbook=RUNBOOK
        )


def up(
    directory: Path,
    *,
    repos: dict[str, str] | None = None,
    pod_ready_seconds: float | None = None,
    timeout: float = 60.0,
) -> SandboxInfo:
    """Start the sandbox process in the background and return once its API serves.

    `repos` maps Git URLs to local directories for the simulated Argo CD (by
    default the project's `examples/platform` serves as the platform repo);
    settings are remembered in the dir, so a later `up` keeps them.
    """
    directory = Path(directory).resolve()
    current = status(directory)
    if current.running:
        return current
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (directory / "sandbox.json").unlink()
    settings_path = directory / "settings.json"
    try:
        settings: dict[str, Any] = json.loads(settings_path.read_text())
    except (FileNotFoundError, ValueError):
        settings = {"repos": {PLATFORM_REPO: str(EXAMPLES)} if EXAMPLES.is_dir() else {}}
    for url, path in (repos or {}).items():
        if not Path(path).is_dir():
            raise errors.ConfigError(f"--repo {url}={path}: {path} is not a directory")
        settings.setdefault("repos", {})[url] = str(Path(path).resolve())
    if pod_ready_seconds is not None:
        settings["pod_ready_seconds"] = pod_ready_seconds
    files.write_atomic(settings_path, json.dumps(settings).encode())
    with (directory / "sandbox.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dr.sandbox", "serve", "--dir", str(directory)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _record_child(directory, proc.pid)

    def ready() -> SandboxInfo | waiting.Pending:
        if proc.poll() is not None:
            tail = (directory / "sandbox.log").read_text(errors="replace")[-2000:]
            raise errors.PermanentError(f"the sandbox process exited ({proc.returncode}):\n{tail}", runbook=RUNBOOK)
        info = status(directory)
        return info if info.healthy and info.pid == proc.pid else waiting.Pending("starting")

    try:
        return waiting.wait_until(
            ready, what=f"the sandbox in {directory} to serve", timeout=timeout, interval=0.05, max_interval=0.2
        )
    except errors.DeadlineExceeded as exc:
        raise errors.DeadlineExceeded(
            exc.message,
            hint=f"read {directory / 'sandbox.log'}; stop it with `dr sandbox down --dir {directory}`",
            runbook=RUNBOOK,
        ) from exc


def _children_file(directory: Path) -> Path:
    return directory / "children.json"


def _record_child(directory: Path, pid: int) -> None:
    path = _children_file(directory)
    try:
        pids: list[int] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        pids = []
    files.write_atomic(path, json.dumps(sorted({*pids, pid})).encode())


def down(directory: Path, *, timeout: float = 15.0) -> list[int]:
    """Stop the sandbox and every process it recorded; idempotent. Returns the pids that were stopped."""
    directory = Path(directory).resolve()
    try:
        pids: list[int] = json.loads(_children_file(directory).read_text())
    except (FileNotFoundError, ValueError):
        pids = []
    info = status(directory)
    if info.pid:
        pids.append(info.pid)
    stopped = [p for p in sorted(set(pids)) if alive(p)]
    for pid in stopped:  # the process group: the sandbox and anything it started
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in stopped) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in stopped:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    for name in ("sandbox.json", "children.json", "sandbox.lock"):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    return stopped
