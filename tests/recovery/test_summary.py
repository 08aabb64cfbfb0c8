"""RTO, RPO and where the time went, worked out from a run record (no cluster needed)."""

from __future__ import annotations

from dr import views
from dr.engine import checkpoints
from dr.recovery import summary


def record(status: checkpoints.RunStatus = "succeeded") -> checkpoints.RunRecord:
    steps = {
        "snapshot": checkpoints.StepRecord(
            name="snapshot",
            state="succeeded",
            duration_s=4.0,
            wait_s=3.0,
            ended_at="2026-12-01T03:00:05.000000Z",
            outputs={"id": "20261201T020000Z-abc123", "created_at": "2026-12-01T02:00:00.000000Z"},
        ),
        "cluster": checkpoints.StepRecord(name="cluster", state="succeeded", duration_s=60.0, wait_s=55.0),
        "raft-restore": checkpoints.StepRecord(
            name="raft-restore",
            state="succeeded",
            duration_s=30.0,
            wait_s=20.0,
            retry_wait_s=4.0,
            ended_at="2026-12-01T03:10:00.000000Z",
        ),
    }
    return checkpoints.RunRecord(
        run_id="20261201T030000Z-def456",
        plan="recover",
        created_at="2026-12-01T03:00:00.000000Z",
        updated_at="2026-12-01T03:12:00.000000Z",
        status=status,
        ended_at="2026-12-01T03:12:00.000000Z",
        steps=steps,
    )


def test_rto_is_wall_time_rpo_is_the_snapshots_age_at_restore_and_the_branch_is_off_the_critical_path() -> None:
    times = summary.of(record())
    assert 720.0 == times.rto_s  # 03:00 → 03:12, gaps included
    assert 4200.0 == times.rpo_s  # taken 02:00, restored 03:10
    assert 90.0 == times.steps_s  # cluster + raft-restore; the snapshot branch runs beside them
    assert 79.0 == times.waited_s
    assert 11.0 == times.orchestration_s
    assert "20261201T020000Z-abc123" == times.snapshot_id


def test_a_failed_run_has_no_rto_and_the_view_says_so() -> None:
    run = record("failed")
    assert summary.of(run).rto_s is None
    text = views.run_status(run, None)
    assert "RTO" not in text
    assert "snapshot 20261201T020000Z-abc123 taken 2026-12-01 02:00:00Z; RPO 1h10m" in text
    assert "RTO 12m00s" in views.run_status(record(), None)
    assert views.run_json(run)["summary"]["rpo_s"] == 4200.0
