"""Synthetic run records and reports: the renderings and the history are tested without building a platform."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dr.engine import checkpoints
from dr.recovery import steps
from dr.reports import record

START = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
SHA = "ab" * 32


def _at(seconds: float) -> str:
    return checkpoints.timestamp(START + timedelta(seconds=seconds))


def run(scale: float = 1.0, *, fail: str | None = None, start: datetime = START) -> checkpoints.RunRecord:
    """A recover run whose steps take `scale` times a base duration; `fail` names a step that failed."""
    base = {"cluster": 20, "root-app": 10, "argo-sync": 15, "vault-unseal": 12, "raft-restore": 18, "eso-sync": 5}
    base["app-health"] = 8
    shift = (start - START).total_seconds()
    clock = shift
    records: dict[str, checkpoints.StepRecord] = {
        "snapshot": checkpoints.StepRecord(
            name="snapshot",
            state="succeeded",
            started_at=_at(shift),
            ended_at=_at(shift + 2),
            duration_s=2.0,
            wait_s=1.5,
            runs=1,
            outputs={"id": "20261201T020000Z-abc123", "created_at": _at(shift - 3600), "size": 4096, "sha256": SHA},
        )
    }
    failed = False
    for cls in steps.ALL[1:]:
        took = base[cls.name] * scale
        if failed:
            records[cls.name] = checkpoints.StepRecord(name=cls.name, note="not started: waits for " + str(fail))
            continue
        state: checkpoints.StepState = "failed" if cls.name == fail else "succeeded"
        error = None
        if state == "failed":
            error = {"type": "DeadlineExceeded", "message": "ExternalSecret x not Ready", "hint": "h", "runbook": "r"}
            failed = True
        records[cls.name] = checkpoints.StepRecord(
            name=cls.name,
            state=state,
            started_at=_at(clock),
            ended_at=_at(clock + took),
            duration_s=took,
            wait_s=took * 0.8,
            runs=1,
            error=error,
            attempts=[checkpoints.Attempt(1, _at(clock), _at(clock + took), True, state)],
            outputs={"kubernetes_version": "v1.31.0"} if cls.name == "cluster" else {},
        )
        clock += took
    return checkpoints.RunRecord(
        run_id=checkpoints.new_run_id(start),
        plan="recover",
        created_at=_at(shift),
        updated_at=_at(clock),
        status="failed" if fail else "succeeded",
        operator="ops@host",
        params={"provider": "sandbox"},
        steps=records,
        ended_at=_at(clock + 1),
        error=records[fail].error if fail else None,
    )


def report(scale: float = 1.0, *, fail: str | None = None, start: datetime = START) -> dict[str, Any]:
    checks = [
        record.Verification("canaries before the snapshot are in Vault", True, ["secret/x/pre-1: present"]),
        record.Verification("canaries after the snapshot are absent", fail is None, ["secret/x/post-1: absent"]),
    ]
    return record.build(
        run(scale, fail=fail, start=start),
        kind="drill",
        report_id=checkpoints.new_run_id(start),
        scenario="total-loss",
        targets=record.Targets(rto_s=120.0, rpo_s=86400.0),
        verifications=checks,
        phases=[record.Phase("build", _at(-60), _at(-1), "succeeded", "dr bootstrap run x")],
        started_at=checkpoints.timestamp(start - timedelta(seconds=60)),
        disaster_at=checkpoints.timestamp(start - timedelta(seconds=5)),
    )
