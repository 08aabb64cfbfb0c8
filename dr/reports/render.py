"""A report as text for the terminal, Markdown for a ticket or pull request, and JUnit XML for CI.

All three read the same report record, so they cannot disagree; numbers
in Markdown keep one decimal of the JSON's seconds so that a reviewer can
match them. HTML, which needs more room, is in `html.py`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from dr import views
from dr.engine import checkpoints


def _s(value: float | None) -> str:
    """Seconds with one decimal, as in the JSON; from a minute on, also the way people say it."""
    if value is None:
        return "-"
    return f"{value:.1f} s" + (f" ({views.seconds(value)})" if value >= 60 else "")


def _plain(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _met(met: bool | None) -> str:
    return "no target" if met is None else ("met" if met else "BREACHED")


def _when(stamp: str | None) -> str:
    return views.clock(stamp) if stamp else "-"


def _offset(report: dict[str, Any], stamp: str | None) -> float | None:
    start = report["started_at"]
    if not stamp or not start:
        return None
    return (checkpoints.parse_timestamp(stamp) - checkpoints.parse_timestamp(start)).total_seconds()


def snapshot_line(report: dict[str, Any]) -> str:
    snap = report["rpo"]["snapshot"] or {}
    if not snap.get("id"):
        return "no snapshot restored"
    return (
        f"snapshot {snap['id']} taken {_when(snap.get('created_at'))}, {snap.get('size', '?')} bytes,"
        f" sha256 {snap.get('sha256', '?')}; disaster at {_when(report['rpo']['disaster_at'])}"
    )


def headline(report: dict[str, Any]) -> list[tuple[str, str]]:
    versions = report["versions"]
    return [
        ("run", f"{report['type']} {report['id']}"),
        ("verdict", report["verdict"].upper()),
        ("scenario", report.get("scenario") or "-"),
        ("provider", report.get("provider") or "-"),
        ("operator", report["operator"]),
        ("started", _when(report["started_at"])),
        ("ended", _when(report["ended_at"])),
        (
            "versions",
            f"dr {versions.get('dr')}, Vault/OpenBao {versions.get('vault') or '?'},"
            f" Kubernetes {versions.get('kubernetes') or '?'}",
        ),
    ]


def target_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for key in ("rto", "rpo"):
        part = report[key]
        rows.append((key.upper(), _s(part["seconds"]), _s(part["target_s"]), _met(part["met"])))
    return rows


def step_rows(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (
            s["name"],
            s["state"],
            s["attempts"],
            _plain(_offset(report, s["started_at"])),
            _s(s["duration_s"]),
            _s(s["waited_s"]),
            _s(s["worked_s"]),
            "yes" if s["critical"] else "",
            (s["error"] or {}).get("message") or s.get("note") or "",
        )
        for s in report["steps"]
    ]


STEP_HEADERS = ("STEP", "STATE", "ATTEMPTS", "START +", "DURATION", "WAITED", "WORKED", "CRITICAL", "NOTE")


def text(report: dict[str, Any]) -> str:
    lines = [f"{k:<9} {v}" for k, v in headline(report)]
    lines += ["", views.table(("", "MEASURED", "TARGET", "RESULT"), target_rows(report))]
    lines += [snapshot_line(report), f"RTO: {report['rto']['definition']}", f"RPO: {report['rpo']['definition']}"]
    if report["rto"]["critical_path"]:
        lines.append(
            f"critical path {' > '.join(report['rto']['critical_path'])}: {_s(report['rto']['critical_path_s'])},"
            f" {_s(report['rto']['waited_s'])} waiting on the platform, {_s(report['rto']['worked_s'])} dr's own work"
        )
    if report["steps"]:
        lines += ["", views.table(STEP_HEADERS, step_rows(report))]
    if report["phases"]:
        rows = [(p["name"], p["outcome"], _s(p["duration_s"]), p["detail"]) for p in report["phases"]]
        lines += ["", views.table(("PHASE", "OUTCOME", "DURATION", "DETAIL"), rows)]
    for check in report["verifications"]:
        lines += ["", f"[{'PASS' if check['passed'] else 'FAIL'}] {check['name']}"]
        lines += [f"    {e}" for e in check["evidence"]]
    if report["error"]:
        err = report["error"]
        lines += ["", f"error: {err['message']}", f"  hint: {err['hint']}", f"  runbook: {err['runbook']}"]
    return "\n".join(lines)


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def markdown(report: dict[str, Any]) -> str:
    verdict = report["verdict"].upper()
    lines = [f"## dr {report['type']} {report['id']}: {verdict}", ""]
    lines += [f"- **{k}**: {_md_cell(v)}" for k, v in headline(report)[2:]]
    lines += ["", _md_table(("", "measured", "target", "result"), target_rows(report)), ""]
    lines += [f"- {snapshot_line(report)}", f"- RTO: {report['rto']['definition']}"]
    lines += [f"- RPO: {report['rpo']['definition']}"]
    if report["rto"]["critical_path"]:
        lines.append(
            f"- critical path: {' → '.join(report['rto']['critical_path'])} ({_s(report['rto']['critical_path_s'])},"
            f" {_s(report['rto']['waited_s'])} waiting, {_s(report['rto']['worked_s'])} dr's own work)"
        )
    if report["steps"]:
        headers = tuple(h.lower() for h in STEP_HEADERS)
        lines += ["", "### Steps", "", _md_table(headers, step_rows(report))]
    if report["phases"]:
        rows = [(p["name"], p["outcome"], _s(p["duration_s"]), p["detail"]) for p in report["phases"]]
        lines += ["", "### Drill phases", "", _md_table(("phase", "outcome", "duration", "detail"), rows)]
    if report["verifications"]:
        lines += ["", "### Verifications", ""]
        for check in report["verifications"]:
            lines.append(f"- {'✅' if check['passed'] else '❌'} **{check['name']}**")
            lines += [f"  - {_md_cell(e)}" for e in check["evidence"]]
    if report["error"]:
        err = report["error"]
        lines += [
            "",
            "### Error",
            "",
            f"> {err['message']}",
            ">",
            f"> hint: {err['hint']} (runbook `{err['runbook']}`)",
        ]
    return "\n".join(lines) + "\n"


def junit(report: dict[str, Any]) -> str:
    """One testcase per step, per verification and per target, so CI shows the drill like a test run."""
    name = f"dr {report['type']} {report['id']}"
    suites = ET.Element("testsuites", name=name)
    suite = ET.SubElement(suites, "testsuite", name=name, timestamp=report["started_at"] or "")
    counts = {"tests": 0, "failures": 0, "skipped": 0}

    def case(classname: str, title: str, seconds: float | None, failure: str | None, detail: str = "") -> None:
        counts["tests"] += 1
        tc = ET.SubElement(suite, "testcase", classname=classname, name=title, time=f"{seconds or 0:.3f}")
        if failure is not None:
            counts["failures"] += 1
            ET.SubElement(tc, "failure", message=failure).text = detail or failure
        elif detail == "skipped":
            counts["skipped"] += 1
            ET.SubElement(tc, "skipped", message="not started")

    for s in report["steps"]:
        err = s["error"] or {}
        failed = s["state"] in ("failed", "interrupted")
        message = err.get("message") or f"step {s['state']}"
        hint = f"{message}\nhint: {err.get('hint')}\nrunbook: {err.get('runbook')}" if err else message
        case(
            f"dr.{report['type']}.steps",
            s["name"],
            s["duration_s"],
            message if failed else None,
            hint if failed else ("skipped" if s["state"] == "pending" else ""),
        )
    for check in report["verifications"]:
        evidence = "\n".join(check["evidence"])
        case(
            f"dr.{report['type']}.verifications",
            check["name"],
            None,
            None if check["passed"] else (check["evidence"] or ["failed"])[0],
            evidence,
        )
    for label, measured, target, result in target_rows(report):
        if target != "-":
            failure = f"{label} {measured} is over its target {target}" if result == "BREACHED" else None
            case(f"dr.{report['type']}.targets", f"{label} within {target}", None, failure)
    if report["error"] and not any(s["state"] == "failed" for s in report["steps"]):
        case(f"dr.{report['type']}", "run", None, report["error"]["message"], report["error"].get("hint") or "")
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("errors", "0")
    suites.set("tests", str(counts["tests"]))
    suites.set("failures", str(counts["failures"]))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def history_text(trends: Any) -> str:
    t = trends
    lines = [
        f"runs {t.runs}, passed {t.passed}"
        + (f" ({100 * t.pass_rate:.0f}%)" if t.pass_rate is not None else "")
        + f"; trend {t.trend}"
        + (f" ({t.trend_pct:+.1f}% newer half vs older half)" if t.trend_pct is not None else ""),
        "",
        views.table(
            ("", "RUNS", "P50", "P95", "LATEST"),
            [("RTO total", t.rto.count, _s(t.rto.p50), _s(t.rto.p95), _s(t.rto.latest))]
            + [("RPO", t.rpo.count, _s(t.rpo.p50), _s(t.rpo.p95), _s(t.rpo.latest))]
            + [(n, s.count, _s(s.p50), _s(s.p95), _s(s.latest)) for n, s in t.steps.items()],
        ),
        "",
        views.table(
            ("RUN", "TYPE", "STARTED", "VERDICT", "RTO", "RPO"),
            [
                (r["id"], r["type"], _when(r["started_at"]), r["verdict"], _s(r["rto_s"]), _s(r["rpo_s"]))
                for r in t.rows
            ],
        ),
    ]
    reg = t.regression
    if reg.baseline_s is not None:
        verdict = "REGRESSED" if reg.regressed else "ok"
        limit = f" (gate {reg.threshold_pct:g}%)" if reg.threshold_pct is not None else ""
        lines += [
            "",
            f"latest RTO {_s(reg.latest_s)} vs median of the runs before it {_s(reg.baseline_s)}:"
            f" {reg.change_pct:+.1f}%{limit}: {verdict}",
        ]
    elif reg.threshold_pct is not None:
        lines += ["", "regression gate: fewer than two runs with an RTO, nothing to compare"]
    return "\n".join(lines)
