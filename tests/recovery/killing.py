"""Kill a `dr` run inside a given step and resume it: shared by the bootstrap and recovery crash tests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from dr.engine import checkpoints


def latest(state: Path) -> checkpoints.RunRecord | None:
    """The newest run record, or None while the first one is still being written."""
    try:
        return checkpoints.CheckpointStore(state).latest()
    except Exception:
        return None


def await_running(state: Path, name: str, proc: subprocess.Popen[bytes], timeout: float = 240) -> checkpoints.RunRecord:
    """Poll the checkpoint until step `name` is running; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = latest(state)
        if run is not None and run.steps.get(name) and run.steps[name].state == "running":
            return run
        assert proc.poll() is None, f"the run ended before step {name} ran"
        time.sleep(0.02)
    raise AssertionError(f"step {name} never ran")


def finished(run: checkpoints.RunRecord) -> dict[str, int]:
    """Attempts of each finished step: a resume must not add any."""
    return {s: len(r.attempts) for s, r in run.steps.items() if r.done}


def assert_not_redone(state: Path, before: dict[str, int]) -> None:
    after = latest(state)
    assert after is not None
    for step_name, attempts in before.items():
        assert len(after.steps[step_name].attempts) == attempts, f"finished step {step_name} was redone"
