"""A toy plan whose steps write marker files, for engine tests; also runnable as a subprocess.

Each step's effect is creating its marker with O_EXCL, so applying an effect
twice fails loudly: that is how the crash tests prove "exactly once".

    python -m tests.engine.toy --state-dir D --work W [--resume] [--kill SPEC] [--gate STEP]

--kill SPEC SIGKILLs this process at a chosen point:
  replace:N   just before the Nth checkpoint rename (tmp written and fsynced)
  renamed:N   just after the Nth checkpoint rename
  write:N     half-way through writing the Nth checkpoint's tmp file
  in:STEP     inside STEP's run(), after its effect, before it returns
  before:STEP inside STEP's run(), before its effect
--gate STEP makes STEP wait (through ctx.wait_until) for the file W/gate-STEP.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dr import errors, logs
from dr.engine import checkpoints, plan, runner, step

# a → (b, c) → d: one fan-out, one join, so the parallel path is exercised.
SHAPE = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}


class MarkerStep(step.Step):
    """Creates W/<name>.done exactly once; optionally waits for a gate file first."""

    default_retry = step.RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.05, jitter=0.0)

    def __init__(
        self,
        name: str,
        requires: tuple[str, ...],
        work: Path,
        *,
        gate: bool = False,
        kill: str | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(name=name, requires=requires, timeout=timeout)
        self.work = work
        self.gate = gate
        self.kill = kill

    @property
    def marker(self) -> Path:
        return self.work / f"{self.name}.done"

    def check(self, ctx: step.StepContext) -> bool:
        if not self.marker.exists():
            return False
        # A crash after the effect but before its output was saved loses the output:
        # check() rediscovers it, as every real step must.
        ctx.set_output("marker", self.marker.name)
        return True

    def run(self, ctx: step.StepContext) -> None:
        if self.gate:
            gate = self.work / f"gate-{self.name}"
            ctx.wait_until(lambda: gate.exists(), what=f"gate file {gate.name}", interval=0.02, max_interval=0.05)
        if self.kill == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # twice → FileExistsError
        os.write(fd, ctx.run_id.encode())
        os.fsync(fd)
        os.close(fd)
        ctx.set_output("marker", self.marker.name)
        if self.kill == "in":
            os.kill(os.getpid(), signal.SIGKILL)


def toy_plan(
    work: Path, *, gate: str | None = None, kill_in: tuple[str, str] | None = None, timeout: float | None = None
) -> plan.Plan:
    return plan.Plan(
        "toy",
        [
            MarkerStep(
                name,
                requires,
                work,
                gate=(name == gate),
                timeout=timeout,
                kill=kill_in[0] if kill_in and kill_in[1] == name else None,
            )
            for name, requires in SHAPE.items()
        ],
    )


def _arm(spec: str) -> tuple[str, str] | None:
    """Install the kill point; returns (mode, step) for kills inside a step."""
    mode, _, arg = spec.partition(":")
    if mode in ("in", "before"):
        return mode, arg
    target = int(arg)
    counter = {"n": 0}
    if mode in ("replace", "renamed"):
        real_replace = os.replace

        def replace(src: object, dst: object) -> None:
            counter["n"] += 1
            if mode == "replace" and counter["n"] == target:
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)  # type: ignore[arg-type]
            if mode == "renamed" and counter["n"] == target:
                os.kill(os.getpid(), signal.SIGKILL)

        os.replace = replace  # type: ignore[assignment]
    elif mode == "write":
        real_write = os.write

        def write(fd: int, data: bytes) -> int:
            if len(data) > 64:  # checkpoint payloads; markers are shorter
                counter["n"] += 1
                if counter["n"] == target:
                    real_write(fd, bytes(data)[: len(data) // 2])
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_write(fd, data)

        os.write = write  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown kill spec {spec!r}")
    return None


def run_toy(
    state: Path,
    work: Path,
    *,
    resume: bool = False,
    kill: str | None = None,
    gate: str | None = None,
    timeout: float | None = None,
) -> int:
    """Run (or resume) the toy plan in this process; returns the exit code."""
    kill_in = _arm(kill) if kill else None
    store = checkpoints.CheckpointStore(state)
    run = runner.Runner(toy_plan(work, gate=gate, kill_in=kill_in, timeout=timeout), store, max_parallel=2)
    try:
        outcome = run.resume(store.run_ids()[0]) if resume else run.start({"toy": True})
    except errors.DRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(outcome.run_id)
    return outcome.exit_code


def forked(state: Path, work: Path, **kwargs: Any) -> int:
    """`run_toy` in a forked child (cheap, and a SIGKILL only kills the child).

    Returns the exit code, or minus the signal number that ended the child.
    """
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            with Path(os.devnull).open("w") as quiet:
                logs.configure("json", stream=quiet)
                code = run_toy(state, work, **kwargs)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


REPO = Path(__file__).resolve().parents[2]


def read_checkpoint(state: Path) -> checkpoints.RunRecord | None:
    """The single run's checkpoint as a fresh reader sees it; must parse whenever it exists."""
    runs = state / "runs"
    found = list(runs.glob("*/checkpoint.json")) if runs.exists() else []
    if not found:
        return None
    (path,) = found
    return checkpoints.RunRecord.from_json(json.loads(path.read_text()), source=path)


def command(state: Path, work: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.engine.toy", "--state-dir", str(state), "--work", str(work), *extra]


def spawn_gated(state: Path, work: Path, gate: str) -> subprocess.Popen[str]:
    """A toy run in a real subprocess, returned once step `gate` is running (waiting for its gate file)."""
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        command(state, work, "--gate", gate), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            rec = read_checkpoint(state)
        except (OSError, ValueError):
            rec = None
        if rec is not None and rec.steps[gate].state == "running":
            return proc
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"toy run did not reach step {gate}: {proc.communicate()[1]}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill")
    parser.add_argument("--gate")
    parser.add_argument("--timeout", type=float)
    args = parser.parse_args()
    logs.configure("json")
    return run_toy(args.state_dir, args.work, resume=args.resume, kill=args.kill, gate=args.gate, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
