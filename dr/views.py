"""Plain-text views of plans, runs and errors for the terminal.

Tables are plain, fixed-width and colourless so they read the same in a
terminal, a pasted incident ticket and a CI log. JSON output (`--output
json`) is built from the same data, not from these strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dr import errors, secret
from dr.engine import checkpoints

if TYPE_CHECKING:
    from dr.adapters import vault
    from dr.recovery import doctor as doctor_mod
    from dr.recovery import summary


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A left-aligned table; `None` cells print as empty."""
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def seconds(value: float | None) -> str:
    """A duration for people: 0.4s, 42s, 3m05s, 1h02m."""
    if value is None:
        return ""
    if value < 10:
        return f"{value:.1f}s"
    total = round(value)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def clock(stamp: str | None) -> str:
    """``2026-12-01 07:01:02Z`` from a checkpoint timestamp."""
    if not stamp:
        return ""
    return checkpoints.parse_timestamp(stamp).strftime("%Y-%m-%d %H:%M:%SZ")


def run_elapsed(run: checkpoints.RunRecord) -> float:
    start = checkpoints.parse_timestamp(run.created_at)
    end = checkpoints.parse_timestamp(run.ended_at) if run.ended_at else datetime.now(UTC)
    return (end - start).total_seconds()


def plan(rows: list[dict[str, Any]]) -> str:
    body = table(
        ("#", "STEP", "REQUIRES", "TIMEOUT", "END STATE (what check tests)"),
        (
            (r["position"], r["name"], ", ".join(r["requires"]) or "-", seconds(r["timeout_s"]), r["end_state"])
            for r in rows
        ),
    )
    return body + "\n\nRunbooks: runbooks/<step>.md; the manual procedure in plan order: runbooks/README.md"


def run_status(run: checkpoints.RunRecord, holder: dict[str, Any] | None, *, advice: bool = True) -> str:
    live = holder is not None and holder.get("run_id") == run.run_id
    head = (
        f"run {run.run_id}  plan {run.plan}  status {run.status}"
        f"{' (in progress, pid ' + str(holder.get('pid')) + ')' if live and holder else ''}\n"
        f"started {clock(run.created_at)} by {run.operator}, "
        f"{'ended ' + clock(run.ended_at) + ', ' if run.ended_at else ''}elapsed {seconds(run_elapsed(run))}"
    )
    if run.params:
        head += "\nparams " + " ".join(f"{k}={v}" for k, v in run.params.items())
    if run.status == "running" and not live:
        head += (
            f"\nthe process that ran it is gone (crashed or killed); resume with: dr {run.plan} --resume {run.run_id}"
        )
    rows = []
    for rec in run.steps.values():
        note = rec.error["message"] if rec.error else (rec.note or "")
        rows.append(
            (
                rec.name,
                rec.state + (" (resumed)" if rec.resumed and rec.done else ""),
                len(rec.attempts) or "",
                clock(rec.started_at)[11:] if rec.started_at else "",
                seconds(rec.duration_s) if rec.started_at else "",
                seconds(rec.wait_s + rec.retry_wait_s) if rec.started_at else "",
                note,
            )
        )
    body = table(("STEP", "STATE", "ATTEMPTS", "STARTED", "DURATION", "WAITED", "NOTE"), rows)
    from dr.recovery import summary  # the step classes, with the use cases behind them: not for every view

    tail = "\n" + _times(run.plan, summary.of(run))
    failed = [r for r in run.steps.values() if r.state == "failed" and r.error and advice]
    for rec in failed:
        assert rec.error is not None
        tail += f"\n{rec.name}: {rec.error['hint']}\n  runbook: {rec.error['runbook']}"
    if advice and run.status in ("failed", "stopped"):
        tail += f"\nresume with: dr {run.plan} --resume {run.run_id}"
    return f"{head}\n\n{body}{tail}"


def run_json(run: checkpoints.RunRecord) -> dict[str, Any]:
    """The run record, with its recovery times (`summary`) worked out."""
    from dr.recovery import summary

    return {**run.to_json(), "summary": summary.of(run).to_json()}


def _times(plan: str, times: summary.Summary) -> str:
    text = (
        f"\ncritical path {' > '.join(times.critical_path) or '-'}"
        f"\nsteps {seconds(times.steps_s)} on the critical path: {seconds(times.waited_s)} waiting on the platform,"
        f" {seconds(times.orchestration_s)} dr's own work"
    )
    if times.rto_s is not None:
        label = "RTO" if plan == "recover" else "took"
        text = (
            f"\n{label} {seconds(times.rto_s)} (wall time from the run's start to app-health, resumes included)" + text
        )
    if times.snapshot_id:
        rpo = f"; RPO {seconds(times.rpo_s)} (its age at the run's start)" if times.rpo_s is not None else ""
        text += f"\nsnapshot {times.snapshot_id} taken {clock(times.snapshot_created_at)}{rpo}"
    return text


def runs(records: Iterable[checkpoints.RunRecord | errors.CheckpointError]) -> str:
    rows = []
    for item in records:
        if isinstance(item, errors.CheckpointError):
            rows.append(("?", "?", "unreadable", "", "", "", str(item)))
            continue
        failed = ", ".join(n for n, r in item.steps.items() if r.state == "failed")
        rows.append(
            (
                item.run_id,
                item.plan,
                item.status,
                clock(item.created_at),
                seconds(run_elapsed(item)),
                item.operator,
                failed,
            )
        )
    if not rows:
        return "no runs in this state dir"
    return table(("RUN", "PLAN", "STATUS", "STARTED", "ELAPSED", "OPERATOR", "FAILED STEP"), rows)


def error(exc: errors.DRError) -> str:
    return f"error: {exc}\n  hint: {secret.redact_text(exc.hint)}\n  runbook: {exc.runbook}"


def vault_health(health: vault.ClusterHealth) -> str:
    """`dr vault status`: one row per node, then Raft peers, autopilot and the verdict."""

    def yes(value: bool | None) -> str:
        return "" if value is None else ("yes" if value else "no")

    rows = []
    for node in health.nodes:
        seal = node.seal
        rows.append(
            (
                node.address,
                node.role,
                yes(seal.initialized if seal else None),
                yes(seal.sealed if seal else None),
                f"{seal.threshold}/{seal.shares}" if seal and seal.initialized else "",
                seal.progress if seal and seal.sealed else "",
                seal.version if seal else "",
            )
        )
    lines = [table(("ADDRESS", "ROLE", "INIT", "SEALED", "T/N", "PROGRESS", "VERSION"), rows), ""]
    if health.peers is None:
        lines.append("raft peers: not read (no token: set VAULT_TOKEN or BAO_TOKEN)")
        lines.append("autopilot: not checked (no token)")
    else:
        peers = ", ".join(
            f"{p.get('node_id')} ({'leader' if p.get('leader') else 'voter' if p.get('voter') else 'non-voter'}) "
            f"{p.get('address')}"
            for p in health.peers
        )
        lines.append(f"raft peers: {peers}")
        auto = health.autopilot or {}
        lines.append(
            f"autopilot: {'healthy' if auto.get('healthy') else 'unhealthy'}, "
            f"failure tolerance {auto.get('failure_tolerance')}"
        )
    if health.healthy:
        lines.append("cluster: healthy")
    else:
        lines.append("cluster: NOT healthy")
        lines += [f"  - {p}" for p in health.problems]
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def snapshots(entries: list[Any], orphans: list[Any], problems: list[str], *, empty: str = "no snapshots") -> str:
    """`dr snapshot list`: committed snapshots newest first, then orphans and unreadable manifests."""
    now = datetime.now(UTC)
    rows = [
        (
            e.manifest.id,
            e.state,
            _size(e.manifest.size),
            seconds((now - e.manifest.created).total_seconds()),
            e.manifest.raft_index,
            e.manifest.vault_version,
            e.manifest.sha256[:12],
        )
        for e in entries
    ]
    text = table(("ID", "STATE", "SIZE", "AGE", "RAFT INDEX", "VAULT", "SHA256"), rows) if rows else empty
    if orphans:
        text += "\n\norphans (data without a manifest: never restored, removed by prune once old):\n"
        text += table(("KEY", "SIZE", "MODIFIED"), ((o.key, _size(o.size), o.modified.isoformat()) for o in orphans))
    for problem in problems:
        text += f"\nproblem: {problem}"
    return text


def prune(result: Any) -> str:
    """What prune removed (or would), kept and could not remove."""
    verb = "would remove" if result.dry_run else "removed"
    lines = [f"{verb} {len(result.deleted)} snapshot(s), {len(result.orphans)} orphan(s)"]
    lines += [f"  {verb}: {i}" for i in result.deleted]
    lines += [f"  {verb} orphan: {k}" for k in result.orphans]
    lines += [f"  kept: {i} ({', '.join(r)})" for i, r in sorted(result.kept.items(), reverse=True)]
    lines += [f"  kept: {i} (Object Lock until {t}; due for removal after that)" for i, t in result.locked.items()]
    lines += [f"  FAILED to remove {k}: {why}" for k, why in result.failed.items()]
    return "\n".join(lines)


def doctor(report: doctor_mod.Report) -> str:
    """The doctor's table, then what to fix for each check that did not pass."""
    mark = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "-"}
    lines = [table(("CHECK", "STATUS", "DETAIL"), ((c.name, mark[c.status], c.detail) for c in report.checks))]
    for c in report.checks:
        if c.status in ("fail", "warn") and (c.fix or c.runbook):
            lines.append(f"{c.name}: {c.fix}" + (f" (see {c.runbook})" if c.runbook else ""))
    verdict = "a recovery could start" if report.purpose == "recover" else "the snapshot job could run"
    lines.append(("ready: " + verdict) if report.ready else f"not ready: {len(report.failed())} check(s) failed")
    return "\n".join(lines)
