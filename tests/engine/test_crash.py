"""Crash safety: SIGKILL at many points, resume, and every effect happened exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from dr.engine import checkpoints
from tests.engine import toy

STEPS = tuple(toy.SHAPE)
read_checkpoint = toy.read_checkpoint


def run_toy(state: Path, work: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        toy.command(state, work, *extra), cwd=toy.REPO, capture_output=True, text=True, timeout=60, check=False
    )


def crash_then_resume(tmp: Path, spec: str) -> tuple[int, checkpoints.RunRecord | None, checkpoints.RunRecord]:
    """Run the toy plan killed at `spec`, then resume it; returns (first exit, record at kill, final record)."""
    state, work = tmp / "state", tmp / "work"
    work.mkdir(parents=True)
    first = toy.forked(state, work, kill=spec)
    at_kill = read_checkpoint(state)
    if first == 0:
        final = at_kill
    else:
        assert first == -signal.SIGKILL
        # Killed before the first checkpoint existed: there is no run to resume, so start again.
        assert toy.forked(state, work, resume=at_kill is not None) == 0
        final = read_checkpoint(state)
    assert final is not None
    return first, at_kill, final


def assert_exactly_once(tmp: Path, at_kill: checkpoints.RunRecord | None, final: checkpoints.RunRecord) -> None:
    assert final.status == "succeeded"
    for name in STEPS:
        # The marker is created with O_EXCL: a second application would have failed the run.
        assert (tmp / "work" / f"{name}.done").exists()
        assert final.steps[name].state in ("succeeded", "skipped")
        assert final.steps[name].outputs == {"marker": f"{name}.done"}
        if at_kill is not None and at_kill.steps[name].done:
            # A step finished before the crash is not re-entered at all.
            assert len(at_kill.steps[name].attempts) == len(final.steps[name].attempts)
    assert not list((tmp / "state" / "runs").glob("*/.checkpoint.json.*.tmp"))
    assert final.run_id == (at_kill.run_id if at_kill else final.run_id)


@pytest.mark.parametrize("mode", ["replace", "renamed", "write"])
def test_sigkill_around_every_checkpoint_write_is_resumable(tmp_path: Path, mode: str) -> None:
    """SIGKILL before, during and after each checkpoint rename: resume finishes, effects once."""
    n = 0
    while True:
        n += 1
        trial = tmp_path / f"{mode}-{n}"
        code, at_kill, final = crash_then_resume(trial, f"{mode}:{n}")
        if code == 0:  # n is past the last checkpoint write: every point was covered
            break
        assert_exactly_once(trial, at_kill, final)
    assert n > 2 * len(STEPS)  # each step checkpoints several transitions


@pytest.mark.parametrize("where", ["before", "in"])
@pytest.mark.parametrize("name", STEPS)
def test_sigkill_inside_a_step_is_resumable(tmp_path: Path, where: str, name: str) -> None:
    """SIGKILL inside a step's body (before or after its effect): resume re-enters via check()."""
    code, at_kill, final = crash_then_resume(tmp_path, f"{where}:{name}")
    assert code == -signal.SIGKILL
    assert at_kill is not None
    assert at_kill.steps[name].state == "running"
    assert_exactly_once(tmp_path, at_kill, final)
    rec = final.steps[name]
    assert rec.resumed
    # Killed after its effect: the resumed run finds it done through check() and does not run it again.
    assert rec.runs == (1 if where == "in" else 2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_at_a_safe_point_and_resumes(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM or SIGINT while a step waits: exit 130, step interrupted, run stopped; resume completes."""
    state, work = tmp_path / "state", tmp_path / "work"
    proc = toy.spawn_gated(state, work, "c")
    try:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    stopped = read_checkpoint(state)
    assert stopped is not None
    assert stopped.status == "stopped"
    assert stopped.steps["c"].state == "interrupted"
    assert stopped.steps["d"].state == "pending"
    assert '"event": "stop_requested"' in err
    (work / "gate-c").touch()
    assert run_toy(state, work, "--resume", "--gate", "c").returncode == 0
    final = read_checkpoint(state)
    assert final is not None
    assert_exactly_once(tmp_path, stopped, final)


def test_kill_points_cover_the_whole_run(tmp_path: Path) -> None:
    """Sanity of the harness: without a kill the toy run succeeds and leaves 0600 files in a 0700 dir."""
    state, work = tmp_path / "state", tmp_path / "work"
    work.mkdir()
    assert run_toy(state, work).returncode == 0
    record = read_checkpoint(state)
    assert record is not None
    assert record.status == "succeeded"
    path = next((state / "runs").glob("*/checkpoint.json"))
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert oct(state.stat().st_mode & 0o777) == oct(0o700)
    assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)
    assert os.access(path, os.R_OK)
