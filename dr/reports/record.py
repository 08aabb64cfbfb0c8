"""The report record: one versioned JSON document per recover or drill run, the source of every rendering.

Everything a reader needs to trust the numbers is in it: who ran what,
with which versions, when; every step's timing split into waiting on the
platform and dr's own work; RTO and RPO with their definitions, targets and
verdicts; the snapshot that was restored; and the verifications with their
evidence. Its schema is `schema.json` beside this module (documented in the
README); `schema_version` changes when a field changes meaning or goes away.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from dr import __version__, secret
from dr.engine import checkpoints
from dr.recovery import summary

KIND: Final = "dr.report"
SCHEMA_VERSION: Final = 1
SCHEMA: Final = Path(__file__).with_name("schema.json")
RTO_DEFINITION: Final = "wall time from the recovery run's start to app-health verified; resumes and their gaps count"
RPO_DEFINITION: Final = (
    "disaster time minus the restored snapshot's creation time: what was written in between is lost"
    " (a drill knows its disaster time; a real recovery takes its own start, so its RPO is an upper bound)"
)

Verdict = Literal["passed", "failed", "aborted", "stopped"]


@dataclass(frozen=True)
class Targets:
    rto_s: float | None = None
    rpo_s: float | None = None


@dataclass
class Verification:
    """One thing a run proved (or failed to prove), with what it saw."""

    name: str
    passed: bool
    evidence: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "evidence": list(self.evidence)}


@dataclass
class Phase:
    """A stage of a drill around the recovery (build, canaries, snapshot, destroy, verify, teardown)."""

    name: str
    started_at: str
    ended_at: str | None = None
    outcome: str = "running"
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": summary.seconds_between(self.started_at, self.ended_at),
            "outcome": self.outcome,
            "detail": self.detail,
        }


def _met(value: float | None, target: float | None) -> bool | None:
    if value is None or target is None:
        return None
    return value <= target


def _step(rec: checkpoints.StepRecord, on_path: bool, requires: tuple[str, ...]) -> dict[str, Any]:
    waited = rec.wait_s + rec.retry_wait_s
    return {
        "name": rec.name,
        "requires": list(requires),
        "state": rec.state,
        "started_at": rec.started_at,
        "ended_at": rec.ended_at,
        "duration_s": round(rec.duration_s, 3),
        "attempts": len(rec.attempts),
        "waited_s": round(waited, 3),
        "worked_s": round(max(0.0, rec.duration_s - waited), 3),
        "critical": on_path,
        "resumed": rec.resumed,
        "note": rec.note,
        "error": _error(rec.error),
    }


def _error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    if not error:
        return None
    return {k: error.get(k) for k in ("type", "message", "hint", "runbook")}


def build(
    run: checkpoints.RunRecord | None,
    *,
    kind: Literal["recover", "drill"] = "recover",
    report_id: str | None = None,
    scenario: str | None = None,
    provider: str | None = None,
    operator: str | None = None,
    started_at: str | None = None,
    ended_at: str | None = None,
    disaster_at: str | None = None,
    targets: Targets = Targets(),
    verifications: list[Verification] | None = None,
    phases: list[Phase] | None = None,
    verdict: Verdict | None = None,
    error: dict[str, Any] | None = None,
    snapshot_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report of a recovery run, and for a drill the phases around it. `run` is None when a drill
    failed before its recovery started."""
    times = summary.of(run, disaster_at=disaster_at) if run else None
    checks = [v.to_json() for v in verifications or []]
    steps: list[dict[str, Any]] = []
    snapshot: dict[str, Any] = dict(snapshot_extra or {})
    versions: dict[str, Any] = {"dr": __version__}
    if run is not None and times is not None:
        requires = summary.REQUIRES.get(run.plan, {})
        steps = [_step(r, r.name in times.critical_path, requires.get(r.name, ())) for r in run.steps.values()]
        snap = run.steps.get(summary.SNAPSHOT)
        outputs = snap.outputs if snap else {}
        snapshot.update({k: outputs[k] for k in ("id", "created_at", "size", "sha256") if k in outputs})
        versions["kubernetes"] = (
            run.steps["cluster"].outputs.get("kubernetes_version") if "cluster" in run.steps else None
        )
        restore = run.steps.get("raft-restore")
        versions["vault"] = restore.outputs.get("vault_version") if restore else None
    rto = times.rto_s if times else None
    rpo = times.rpo_s if times else None
    if verdict is None:
        succeeded = run is not None and run.status == "succeeded"
        verdict = "passed" if succeeded and all(c["passed"] for c in checks) else "failed"
        if run is not None and run.status == "stopped":
            verdict = "stopped"
    rto_met, rpo_met = _met(rto, targets.rto_s), _met(rpo, targets.rpo_s)
    if verdict == "passed" and (rto_met is False or rpo_met is False):
        verdict = "failed"  # a recovery that breaches its targets did not pass the drill
    first_error = _error(error) or (_error(run.error) if run is not None else None)
    report = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "id": report_id or (run.run_id if run else ""),
        "type": kind,
        "scenario": scenario,
        "provider": provider or (run.params.get("provider") if run else None),
        "verdict": verdict,
        "operator": operator or (run.operator if run else ""),
        "versions": versions,
        "started_at": started_at or (run.created_at if run else None),
        "ended_at": ended_at or (run.ended_at if run else None),
        "recovery_run_id": run.run_id if run else None,
        "rto": {
            "seconds": rto,
            "target_s": targets.rto_s,
            "met": rto_met,
            "definition": RTO_DEFINITION,
            "critical_path": list(times.critical_path) if times else [],
            "critical_path_s": times.steps_s if times else None,
            "waited_s": times.waited_s if times else None,
            "worked_s": times.orchestration_s if times else None,
        },
        "rpo": {
            "seconds": rpo,
            "target_s": targets.rpo_s,
            "met": rpo_met,
            "definition": RPO_DEFINITION,
            "disaster_at": times.disaster_at if times else disaster_at,
            "snapshot": snapshot or None,
        },
        "steps": steps,
        "phases": [p.to_json() for p in phases or []],
        "verifications": checks,
        "error": first_error,
    }
    # The report leaves the machine (tickets, CI artefacts): nothing registered as secret goes with it.
    return secret.redact_value(json.loads(json.dumps(report)))  # type: ignore[no-any-return]


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text())  # type: ignore[no-any-return]
