"""Starting, finding and stopping a sandbox process — from outside, through its directory and HTTP only.

The rest of `dr` may not import `dr.sandbox`; it starts `python -m dr.sandbox`
as a process, learns where it listens from `sandbox.json`, checks it over
HTTPS with the sandbox's CA, and stops it (and every child it recorded, such
as OpenBao processes) by signal. `down` is idempotent and also cleans up
after a sandbox process that was SIGKILLed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
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
    backend: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dir": str(self.directory),
            "running": self.running,
            "healthy": self.healthy,
            "pid": self.pid,
            "url": self.url,
            "kubeconfig": str(self.kubeconfig) if self.kubeconfig else None,
            "backend": self.backend,
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
    import ssl  # with urllib.request, a fifth of `dr --help`'s imports: only here, where the sandbox is asked
    import urllib.error
    import urllib.request

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
    return SandboxInfo(
        directory,
        running,
        running and _healthy(directory, url),
        pid,
        url,
        Path(info["kubeconfig"]),
        info.get("backend"),
    )


PLATFORM_REPO = "https://github.com/temitayocharles/platform-gitops.git"
# Where `make testbed` puts the control plane it builds from testbed/*/go.mod (kine, kube-apiserver, ...).
TESTBED_BIN = Path(os.environ.get("DR_TESTBED_BIN") or Path(__file__).resolve().parents[2] / ".tools" / "bin")
CONTROL_PLANE = ("kine", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
TESTBED = (*CONTROL_PLANE, "external-secrets")  # everything `make testbed` builds: the real backend needs it all
BACKENDS = ("auto", "real", "emulated")


def testbed_built() -> bool:
    """True when every control-plane binary is there: `dr sandbox up` then runs the real control plane."""
    return all(os.access(TESTBED_BIN / name, os.X_OK) for name in TESTBED)


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
    External Secrets fail: on the real control plane the ESO controller's pods resolve no Service name (it
    runs, and cannot reach Vault), on the emulator its stand-in fails every sync.
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
    """Kill (SIGKILL, a crash) or restart (SIGTERM) a Vault or ESO pod's process in a running sandbox."""
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
    backend: str | None = None,
    timeout: float = 120.0,
) -> SandboxInfo:
    """Start the sandbox process in the background and return once its API serves.

    `repos` maps Git URLs to local directories for the simulated Argo CD (by
    default the project's `examples/platform` serves as the platform repo);
    settings are remembered in the dir, so a later `up` keeps them.
    `backend` is `real` (kube-apiserver and friends from `make testbed`),
    `emulated` (the project's own API, where no Go toolchain is), or `auto`:
    real when built; unset, `DR_SANDBOX_BACKEND` decides (else auto), so
    that every sandbox a command or a drill starts can be switched at once.
    """
    backend = backend or os.environ.get("DR_SANDBOX_BACKEND") or "auto"
    if backend not in BACKENDS:
        raise errors.ConfigError(
            f"sandbox backend {backend!r} (--backend or DR_SANDBOX_BACKEND): choose one of {', '.join(BACKENDS)}"
        )
    if backend == "real" and not testbed_built():
        raise errors.ConfigError(
            f"the real control plane is not built: {', '.join(n for n in TESTBED if not (TESTBED_BIN / n).is_file())}"
            f" missing from {TESTBED_BIN}",
            hint="run `make testbed` (needs Go >= 1.26 and the Go module proxy), or use --backend emulated",
            runbook=RUNBOOK,
        )
    directory = Path(directory).resolve()
    current = status(directory)
    if current.running:
        return current
    if _starting(directory):
        # A sandbox process holds the dir but does not serve yet: one whose `up` was killed while it waited
        # (a resumed run's cluster step comes here). Starting a second one would only fail on its lock.
        return _await_serving(directory, timeout)
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
            [sys.executable, "-m", "dr.sandbox", "serve", "--dir", str(directory), "--backend", backend],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    record_children(directory, [proc.pid])

    def ready() -> SandboxInfo | waiting.Pending:
        if proc.poll() is not None and _starting(directory):
            return _await_serving(directory, timeout)  # another `up` started one first: that one serves the dir
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


def _starting(directory: Path) -> bool:
    """True while some process holds the dir's sandbox lock (the sandbox process takes it first thing)."""
    try:
        fd = os.open(directory / "sandbox.lock", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock this call took
    return False


def _await_serving(directory: Path, timeout: float) -> SandboxInfo:
    def serving() -> SandboxInfo | waiting.Pending:
        info = status(directory)
        if info.healthy:
            return info
        if not _starting(directory):
            raise errors.PermanentError(
                f"the sandbox process starting in {directory} exited",
                hint=f"read {directory / 'sandbox.log'}",
                runbook=RUNBOOK,
            )
        return waiting.Pending("starting")

    return waiting.wait_until(serving, what=f"the sandbox in {directory} to serve", timeout=timeout, interval=0.1)


def _children_file(directory: Path) -> Path:
    return directory / "children.json"


def record_children(directory: Path, pids: list[int]) -> None:
    """Add pids to children.json, which `down` stops even if the sandbox process was SIGKILLed.

    Under a lock: `up` and the sandbox process's threads (control plane, Vault pods, dr's pods) add
    their pids at the same moments, and a lost pid is an orphan that `down` would never stop.
    """
    path = _children_file(directory)
    with (directory / "children.lock").open("a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            known: list[int] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            known = []
        files.write_atomic(path, json.dumps(sorted({*known, *pids})).encode())


def down(directory: Path, *, timeout: float = 15.0) -> list[int]:
    """Stop the sandbox and every process it recorded; idempotent. Returns the pids that were stopped."""
    directory = Path(directory).resolve()
    try:
        pids: list[int] = json.loads(_children_file(directory).read_text())
    except (FileNotFoundError, ValueError):
        pids = []
    info = status(directory)
    stopped = [p for p in sorted(set(pids) | ({info.pid} if info.pid else set())) if alive(p)]
    # The sandbox process first: it stops its control plane in order (API server before its storage) and its
    # Vault pods. Whatever it left (it may have been SIGKILLed) is stopped after, by signal.
    if info.pid and alive(info.pid):
        _stop([info.pid], timeout)
    _stop([p for p in stopped if alive(p)], min(timeout, 5.0))
    try:  # anything the sandbox started while it was being stopped is recorded too
        late = [p for p in json.loads(_children_file(directory).read_text()) if p not in stopped and alive(p)]
    except (FileNotFoundError, ValueError):
        late = []
    _stop(late, min(timeout, 5.0))
    stopped += late
    for name in ("sandbox.json", "children.json", "children.lock", "sandbox.lock"):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    return stopped


def _stop(pids: list[int], timeout: float) -> None:
    """SIGTERM each process and its group, SIGKILL what is still alive after `timeout`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    # A killed process still holds its ports until it has finished exiting: return once it has.
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
