"""How long a recovery took and how much it lost: RTO, RPO and where the time went, from the run record.

RTO is wall time from the run's start to `app-health` verified: a crash and
a resume an hour later is an hour more of outage, so gaps count. RPO is the
disaster time minus the restored snapshot's creation time: everything
written to the original Vault in between is what the recovery lost. A drill
knows its disaster time (it destroyed the source itself); a real recovery
does not, so it takes the run's start, the latest the disaster can have
been, and the RPO is an upper bound. The critical path is the chain of
steps that decided the end time, walked back from the last step through
the prerequisite that finished last; of it, "waited" is time spent waiting
on the platform and "orchestration" is dr's own work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dr.engine import checkpoints
from dr.recovery import steps

SNAPSHOT = "snapshot"  # the step whose outputs describe the restored snapshot
LAST = "app-health"  # RTO ends when this step is verified
REQUIRES: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "recover": {cls.name: cls.requires for cls in steps.ALL},
    "bootstrap": {cls.name: cls.requires for cls in steps.BOOTSTRAP},
}


@dataclass(frozen=True)
class Summary:
    rto_s: float | None
    steps_s: float
    waited_s: float
    orchestration_s: float
    critical_path: tuple[str, ...]
    snapshot_id: str | None
    snapshot_created_at: str | None
    disaster_at: str | None
    rpo_s: float | None

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "critical_path": list(self.critical_path)}


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (checkpoints.parse_timestamp(end) - checkpoints.parse_timestamp(start)).total_seconds()


def critical_path(run: checkpoints.RunRecord) -> tuple[str, ...]:
    """The steps that decided when the run ended, first to last."""
    requires = REQUIRES.get(run.plan, {})
    ended = {n: checkpoints.parse_timestamp(r.ended_at) for n, r in run.steps.items() if r.ended_at}
    if not ended:
        return ()
    current = max(ended, key=lambda n: ended[n])
    path = [current]
    while before := [d for d in requires.get(current, ()) if d in ended]:
        current = max(before, key=lambda n: ended[n])
        path.append(current)
    return tuple(reversed(path))


def of(run: checkpoints.RunRecord, *, disaster_at: str | None = None) -> Summary:
    path = critical_path(run)
    on_path = [run.steps[n] for n in path]
    steps_s = sum(r.duration_s for r in on_path)
    waited_s = sum(r.wait_s + r.retry_wait_s for r in on_path)
    snap = run.steps.get(SNAPSHOT)
    outputs = snap.outputs if snap else {}
    last = run.steps.get(LAST)
    end = last.ended_at if last and last.done and last.ended_at else run.ended_at
    restored = run.steps.get("raft-restore")
    disaster = disaster_at or run.created_at
    return Summary(
        rto_s=seconds_between(run.created_at, end) if run.status == "succeeded" else None,
        steps_s=round(steps_s, 3),
        waited_s=round(waited_s, 3),
        orchestration_s=round(max(0.0, steps_s - waited_s), 3),
        critical_path=path,
        snapshot_id=outputs.get("id"),
        snapshot_created_at=outputs.get("created_at"),
        disaster_at=disaster if outputs.get("created_at") else None,
        # Only a restore that happened lost anything: before it, nothing has been recovered yet.
        rpo_s=seconds_between(outputs.get("created_at"), disaster) if restored and restored.done else None,
    )
