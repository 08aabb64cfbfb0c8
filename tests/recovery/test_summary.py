"""RTO, RPO and where the time went, worked out from a run record (no cluster needed)."""

from __future__ import annotations

from dr import views
from dr.engine import checkpoints
from dr.recovery import summary


def _step(name: str, start: str, end: str, duration: float, wait: float, **extra: object) -> checkpoints.StepRecord:
    day = "2026-12-01T"
    return checkpoints.StepRecord(
        name=name,
        state="succeeded",
        started_at=f"{day}{start}.000000Z",
        ended_at=f"{day}{end}.000000Z",
        duration_s=duration,
        wait_s=wait,
        runs=1,
        **extra,  # type: ignore[arg-type]
    )


def record(status: checkpoints.RunStatus = "succeeded") -> checkpoints.RunRecord:
    steps = {
        "snapshot": _step(
            "snapshot",
            "03:00:00",
            "03:00:04",
            4.0,
            3.0,
            outputs={"id": "20261201T020000Z-abc123", "created_at": "2026-12-01T02:00:00.000000Z"},
        ),
        "cluster": _step("cluster", "03:00:00", "03:01:00", 60.0, 55.0),
        "root-app": _step("root-app", "03:01:00", "03:02:00", 60.0, 50.0),
        "argo-sync": _step("argo-sync", "03:02:00", "03:03:00", 60.0, 58.0),
        "vault-unseal": _step("vault-unseal", "03:03:00", "03:09:30", 390.0, 380.0),
        "raft-restore": _step("raft-restore", "03:09:30", "03:10:00", 30.0, 20.0, retry_wait_s=4.0),
        "eso-sync": _step("eso-sync", "03:10:00", "03:10:30", 30.0, 25.0),
        "app-health": _step("app-health", "03:10:30", "03:11:00", 30.0, 25.0),
    }
    if status != "succeeded":
        steps["app-health"].state = "failed"
    return checkpoints.RunRecord(
        run_id="20261201T030000Z-def456",
        plan="recover",
        created_at="2026-12-01T03:00:00.000000Z",
        updated_at="2026-12-01T03:12:00.000000Z",
        status=status,
        ended_at="2026-12-01T03:12:00.000000Z",
        steps=steps,
    )


def test_rto_ends_at_app_health_rpo_is_the_snapshots_age_at_the_disaster_and_the_path_is_walked_back() -> None:
    times = summary.of(record())
    assert 660.0 == times.rto_s  # 03:00 → app-health verified at 03:11, not the run's end at 03:12
    assert 3600.0 == times.rpo_s  # taken 02:00; no disaster time given, so the run's start (03:00)
    assert 5400.0 == summary.of(record(), disaster_at="2026-12-01T03:30:00.000000Z").rpo_s
    # The snapshot ended before vault-unseal, so the restore waited on vault-unseal: the branch is off the path.
    assert ("cluster", "root-app", "argo-sync", "vault-unseal", "raft-restore", "eso-sync", "app-health") == (
        times.critical_path
    )
    assert 660.0 == times.steps_s
    assert 617.0 == times.waited_s
    assert 43.0 == times.orchestration_s
    assert "20261201T020000Z-abc123" == times.snapshot_id


def test_a_slow_snapshot_download_is_on_the_critical_path() -> None:
    run = record()
    run.steps["snapshot"].ended_at = "2026-12-01T03:09:50.000000Z"
    assert ("snapshot", "raft-restore", "eso-sync", "app-health") == summary.of(run).critical_path


def test_a_failed_run_has_no_rto_and_the_view_says_so() -> None:
    run = record("failed")
    assert summary.of(run).rto_s is None
    text = views.run_status(run, None)
    assert "RTO" not in text
    assert "snapshot 20261201T020000Z-abc123 taken 2026-12-01 02:00:00Z; RPO 1h00m" in text
    assert "RTO 11m00s" in views.run_status(record(), None)
    assert views.run_json(run)["summary"]["rpo_s"] == 3600.0
