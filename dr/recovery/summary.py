"""How long a recovery took and how much it lost: RTO, RPO and where the time went, from the run record.

RTO is wall time from the run's start to its end: a crash and a resume an
hour later is an hour more of outage, so gaps count. RPO is the age of the
restored snapshot when the restore finished: everything written to the
original Vault after the snapshot was taken is what the recovery lost. The
critical path is the run without the snapshot branch (it runs beside the
cluster steps); of it, "waited" is time spent waiting on the platform and
"orchestration" is dr's own work (requests, applying, checking).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dr.engine import checkpoints

BRANCH = "snapshot"  # the step that runs beside provisioning, off the critical path


@dataclass(frozen=True)
class Summary:
    rto_s: float | None
    steps_s: float
    waited_s: float
    orchestration_s: float
    snapshot_id: str | None
    snapshot_created_at: str | None
    rpo_s: float | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (checkpoints.parse_timestamp(end) - checkpoints.parse_timestamp(start)).total_seconds()


def of(run: checkpoints.RunRecord) -> Summary:
    path = [r for name, r in run.steps.items() if name != BRANCH]
    steps_s = sum(r.duration_s for r in path)
    waited_s = sum(r.wait_s + r.retry_wait_s for r in path)
    snap = run.steps.get(BRANCH)
    outputs = snap.outputs if snap else {}
    restore = run.steps.get("raft-restore")
    return Summary(
        rto_s=_seconds(run.created_at, run.ended_at) if run.status == "succeeded" else None,
        steps_s=round(steps_s, 3),
        waited_s=round(waited_s, 3),
        orchestration_s=round(max(0.0, steps_s - waited_s), 3),
        snapshot_id=outputs.get("id"),
        snapshot_created_at=outputs.get("created_at"),
        rpo_s=_seconds(outputs.get("created_at"), restore.ended_at if restore and restore.done else None),
    )
