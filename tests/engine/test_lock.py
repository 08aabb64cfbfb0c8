"""The state-dir lock: a second run stops with exit 3 and names the holder; a dead holder frees it."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from dr import cli, errors
from dr.engine import checkpoints, locks, runner
from tests.engine import toy


@pytest.fixture
def holder(tmp_path: Path):  # type: ignore[no-untyped-def]
    proc = toy.spawn_gated(tmp_path / "state", tmp_path / "work", "a")
    yield proc, toy.read_checkpoint(tmp_path / "state")
    proc.kill()
    proc.wait()


def test_second_run_in_process_is_refused_naming_the_holder(tmp_path: Path, holder) -> None:  # type: ignore[no-untyped-def]
    """Runner.start on a locked state dir raises LockHeldError with the holder's run id, pid and start."""
    proc, rec = holder
    store = checkpoints.CheckpointStore(tmp_path / "state")
    with pytest.raises(errors.LockHeldError) as info:
        runner.Runner(toy.toy_plan(tmp_path / "work"), store, handle_signals=False).start()
    message = str(info.value)
    assert rec.run_id in message
    assert f"pid {proc.pid}" in message
    assert "holds the lock since 20" in message
    assert 3 == info.value.exit_code


def test_second_recover_from_the_cli_exits_3(tmp_path: Path, holder) -> None:  # type: ignore[no-untyped-def]
    """`dr recover` against a state dir another run holds exits 3 and says who holds it."""
    _, rec = holder
    result = CliRunner().invoke(
        cli.cli,
        ["recover", "--cluster", "new", "--skip-preflight", "--state-dir", str(tmp_path / "state")],
        env={"DR_CONFIG": ""},
    )
    assert 3 == result.exit_code, result.output
    assert f"run {rec.run_id}" in result.output
    assert "Traceback" not in result.output


def test_status_from_another_terminal_shows_the_live_run(tmp_path: Path, holder) -> None:  # type: ignore[no-untyped-def]
    """`dr status` while a run holds the lock reports it live, with the running step."""
    proc, rec = holder
    result = CliRunner().invoke(cli.cli, ["status", "--state-dir", str(tmp_path / "state"), "-o", "json"])
    assert 0 == result.exit_code, result.output
    data = json.loads(result.output)
    assert (rec.run_id, True, "running") == (data["run_id"], data["live"], data["steps"]["a"]["state"])
    text = CliRunner().invoke(cli.cli, ["status", "--state-dir", str(tmp_path / "state")]).output
    assert f"in progress, pid {proc.pid}" in text


def test_killed_holder_releases_the_lock(tmp_path: Path, holder) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL of the holder frees the lock at once; the run then resumes and completes."""
    proc, rec = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert locks.StateLock(tmp_path / "state").holder() is None
    status = CliRunner().invoke(cli.cli, ["status", "--state-dir", str(tmp_path / "state")]).output
    assert "process that ran it is gone" in status
    (tmp_path / "work" / "gate-a").touch()
    assert 0 == toy.forked(tmp_path / "state", tmp_path / "work", resume=True, gate="a")
    final = toy.read_checkpoint(tmp_path / "state")
    assert final is not None
    assert (rec.run_id, "succeeded") == (final.run_id, final.status)
