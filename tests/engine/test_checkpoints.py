"""Checkpoints: atomic writes, private modes, versioning, clear errors for unreadable files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dr import errors, secret
from dr.engine import checkpoints


def record(run_id: str = "20261201T000000Z-000001") -> checkpoints.RunRecord:
    now = checkpoints.timestamp(checkpoints.utcnow())
    return checkpoints.RunRecord(
        run_id=run_id, plan="toy", created_at=now, updated_at=now, steps={"a": checkpoints.StepRecord(name="a")}
    )


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    """A saved record loads back equal, attempts included."""
    store = checkpoints.CheckpointStore(tmp_path)
    rec = record()
    rec.steps["a"].attempts.append(checkpoints.Attempt(number=1, started_at=rec.created_at, outcome="succeeded"))
    rec.steps["a"].outputs = {"nodes": ["10.0.0.1"]}
    store.save(rec)
    assert rec == store.load(rec.run_id)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """When the new checkpoint cannot be written, the old one is intact and the error is a CheckpointError."""
    store = checkpoints.CheckpointStore(tmp_path)
    rec = record()
    store.save(rec)
    before = store.path(rec.run_id).read_bytes()
    # Make the rename fail: the target's name is now taken by a non-empty directory.
    target = store.path(rec.run_id)
    target.unlink()
    target.mkdir()
    (target / "keep").write_bytes(before)
    rec.status = "failed"
    with pytest.raises(errors.CheckpointError, match="cannot write"):
        store.save(rec)
    assert before == (target / "keep").read_bytes()
    assert [] == list(target.parent.glob(".checkpoint.json.*.tmp"))  # the tmp file was removed


def test_files_are_private(tmp_path: Path) -> None:
    """State dir and run dirs are 0700, checkpoints 0600, whatever the umask."""
    old = os.umask(0)
    try:
        store = checkpoints.CheckpointStore(tmp_path / "state")
        store.save(record())
    finally:
        os.umask(old)
    assert 0o700 == (tmp_path / "state").stat().st_mode & 0o777
    path = next((tmp_path / "state" / "runs").glob("*/checkpoint.json"))
    assert (0o600, 0o700) == (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777)


def test_state_dir_readable_by_others_is_refused(tmp_path: Path) -> None:
    """An existing state dir with group/other access is refused with the chmod to run (exit 2)."""
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    with pytest.raises(errors.ConfigError, match="accessible by other users") as info:
        checkpoints.CheckpointStore(loose)
    assert f"chmod 700 {loose}" in info.value.hint


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"kind": "something-else"}', "is not a dr checkpoint"),
        ('{"kind": "dr.checkpoint", "schema_version": 99}', "schema version 99"),
        ('{"kind": "dr.checkpoint", "schema_version": 1, "surprise": 1}', "unexpected layout"),
    ],
)
def test_unreadable_checkpoints_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    """Broken, foreign or future checkpoints raise CheckpointError naming the file and the problem."""
    store = checkpoints.CheckpointStore(tmp_path)
    run_dir = store.run_dir("20261201T000000Z-000001")
    run_dir.mkdir(mode=0o700)
    (run_dir / "checkpoint.json").write_text(content)
    with pytest.raises(errors.CheckpointError, match=message):
        store.load("20261201T000000Z-000001")
    assert isinstance(next(store.iter_runs()), errors.CheckpointError)


@pytest.mark.parametrize("bad", ["../escape", ".hidden", "", "a/b"])
def test_run_ids_cannot_escape_the_state_dir(tmp_path: Path, bad: str) -> None:
    """A run id with a path in it is refused before any file is touched."""
    with pytest.raises(errors.ConfigError, match="is not a run id"):
        checkpoints.CheckpointStore(tmp_path).load(bad)


def test_registered_secrets_never_reach_the_file(tmp_path: Path) -> None:
    """Even if a secret slips into an error message, the checkpoint on disk has it masked."""
    share = secret.Secret("c2hhcmUtb25lLW9mLWZpdmUtdmVyeS1zZWNyZXQ=")
    store = checkpoints.CheckpointStore(tmp_path)
    rec = record()
    rec.steps["a"].note = f"unseal failed with {share.reveal()}"
    store.save(rec)
    text = store.path(rec.run_id).read_text()
    assert share.reveal() not in text
    assert "unseal failed with ***" == json.loads(text)["steps"]["a"]["note"]


def test_run_ids_sort_by_start_time() -> None:
    """Run ids are UTC-timestamp prefixed, so sorting them sorts runs by start."""
    from datetime import UTC, datetime

    early = checkpoints.new_run_id(datetime(2026, 1, 1, tzinfo=UTC))
    late = checkpoints.new_run_id(datetime(2026, 12, 1, tzinfo=UTC))
    assert sorted([late, early]) == [early, late]
    assert early.startswith("20260101T000000Z-")
