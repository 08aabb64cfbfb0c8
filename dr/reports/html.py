"""A report as one self-contained HTML file: an SVG timeline, targets, RPO evidence, steps and history.

No scripts, fonts or stylesheets from elsewhere: the file is attached to
incident tickets and opened on machines without network access. The
timeline draws every step (and a drill's phases) against seconds since the
run started; steps on the critical path are orange, others grey, and the
hatched part of each bar is the share of the step spent waiting on the
platform (time spent waiting is not one interval, so it is drawn as a share).
"""

from __future__ import annotations

from html import escape
from typing import Any

from dr.reports import render

CRITICAL = "#c2410c"
OTHER = "#64748b"
PHASE = "#0f766e"
FAILED = "#b91c1c"
ROW = 26
LEFT = 170
WIDTH = 900

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #111827; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: 3px 10px; border-bottom: 1px solid #e5e7eb;
text-align: left; } th { background: #f3f4f6; }
.passed { color: #15803d; font-weight: bold; } .failed, .aborted, .stopped, .BREACHED { color: #b91c1c;
font-weight: bold; } .met { color: #15803d; } .note { color: #4b5563; font-size: .9em; }
code { background: #f3f4f6; padding: 0 3px; }
"""


def _bars(rows: list[tuple[str, float, float, float, str, str]], total: float) -> str:
    """rows: (label, start_s, duration_s, waited_s, colour, tooltip)."""
    scale = (WIDTH - LEFT - 20) / max(total, 1.0)
    height = ROW * len(rows) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img"'
        ' aria-label="timeline of the run">',
        '<defs><pattern id="wait" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#ffffff" stroke-opacity="0.7" stroke-width="3"/></pattern></defs>',
    ]
    for i, (label, start, duration, waited, colour, tip) in enumerate(rows):
        y = 10 + i * ROW
        x, w = LEFT + start * scale, max(duration * scale, 2.0)
        shaded = w * (min(waited, duration) / duration if duration else 0.0)
        parts.append(f'<text x="{LEFT - 8}" y="{y + 15}" text-anchor="end" font-size="12">{escape(label)}</text>')
        parts.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{ROW - 8}" fill="{colour}">'
            f"<title>{escape(tip)}</title></rect>"
        )
        if shaded >= 1:
            parts.append(
                f'<rect x="{x + w - shaded:.1f}" y="{y}" width="{shaded:.1f}" height="{ROW - 8}" fill="url(#wait)"/>'
            )
    axis_y = 10 + len(rows) * ROW + 5
    parts.append(f'<line x1="{LEFT}" y1="{axis_y}" x2="{WIDTH - 20}" y2="{axis_y}" stroke="#9ca3af"/>')
    for k in range(6):
        t = total * k / 5
        x = LEFT + t * scale
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle" font-size="11">{t:.0f} s</text>')
    parts.append("</svg>")
    return "".join(parts)


def timeline(report: dict[str, Any]) -> str:
    rows: list[tuple[str, float, float, float, str, str]] = []
    ends = [0.0]
    for p in report["phases"]:
        start = render._offset(report, p["started_at"])
        if start is None or p["duration_s"] is None:
            continue
        colour = FAILED if p["outcome"] == "failed" else PHASE
        rows.append((f"drill: {p['name']}", start, p["duration_s"], 0.0, colour, f"{p['name']}: {p['outcome']}"))
        ends.append(start + p["duration_s"])
    for s in report["steps"]:
        start = render._offset(report, s["started_at"])
        if start is None:
            continue
        colour = FAILED if s["state"] == "failed" else CRITICAL if s["critical"] else OTHER
        tip = f"{s['name']}: {s['state']}, {s['duration_s']:.1f} s, waited {s['waited_s']:.1f} s"
        rows.append((s["name"], start, s["duration_s"], s["waited_s"], colour, tip))
        ends.append(start + s["duration_s"])
    if not rows:
        return "<p>No step started.</p>"
    return _bars(rows, max(ends))


def history_chart(reports: list[dict[str, Any]], target: float | None) -> str:
    """RTO of the earlier runs and this one, with the target as a line; failed runs as red marks on the axis."""
    if len(reports) < 2:
        return "<p>History: the first run in this state dir.</p>"
    values = [r["rto"]["seconds"] for r in reports]
    top = max([v for v in values if v is not None] + [target or 0.0, 1.0]) * 1.1
    height, bottom, step = 220, 190, (WIDTH - LEFT) / len(reports)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img"']
    parts.append(' aria-label="RTO history">')
    parts.append(f'<text x="{LEFT - 8}" y="20" text-anchor="end" font-size="11">{top:.0f} s</text>')
    parts.append(f'<text x="{LEFT - 8}" y="{bottom}" text-anchor="end" font-size="11">0 s</text>')
    for i, (r, v) in enumerate(zip(reports, values, strict=True)):
        x = LEFT + i * step + step * 0.15
        if v is None:
            parts.append(f'<rect x="{x:.1f}" y="{bottom - 4}" width="{step * 0.7:.1f}" height="4" fill="{FAILED}">')
            parts.append(f"<title>{escape(r['id'])}: {escape(r['verdict'])}, no RTO</title></rect>")
            continue
        h = (bottom - 10) * v / top
        colour = CRITICAL if r is reports[-1] else OTHER
        parts.append(
            f'<rect x="{x:.1f}" y="{bottom - h:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" fill="{colour}">'
            f"<title>{escape(r['id'])}: RTO {v:.1f} s ({escape(r['verdict'])})</title></rect>"
        )
    if target:
        y = bottom - (bottom - 10) * target / top
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH}" y2="{y:.1f}" stroke="{FAILED}" stroke-dasharray="6 4"/>'
            f'<text x="{WIDTH - 4}" y="{y - 4:.1f}" text-anchor="end" font-size="11">target {target:.0f} s</text>'
        )
    parts.append(f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH}" y2="{bottom}" stroke="#9ca3af"/></svg>')
    return "".join(parts)


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]], classes: int | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = ""
    for row in rows:
        cells = ""
        for i, cell in enumerate(row):
            cls = f' class="{escape(str(cell))}"' if classes is not None and i == classes else ""
            cells += f"<td{cls}>{escape(str(cell))}</td>"
        body += f"<tr>{cells}</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def page(report: dict[str, Any], history: list[dict[str, Any]]) -> str:
    verdict = report["verdict"]
    title = f"dr {report['type']} {report['id']}: {verdict.upper()}"
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f'<h1>dr {escape(report["type"])} {escape(report["id"])}: <span class="{escape(verdict)}">'
        f"{escape(verdict.upper())}</span></h1>",
        _table(("", ""), [(k, v) for k, v in render.headline(report)[2:]]),
        "<h2>Targets</h2>",
        _table(("", "measured", "target", "result"), list(render.target_rows(report)), classes=3),
        f'<p class="note">RTO: {escape(report["rto"]["definition"])}<br>RPO: {escape(report["rpo"]["definition"])}</p>',
        "<h2>Timeline</h2>",
        timeline(report),
        f'<p class="note">Orange: the critical path ({escape(" → ".join(report["rto"]["critical_path"]) or "-")}).'
        " Grey: off it. Teal: drill phases. Red: failed. Hatched: the share of a step spent waiting on the"
        " platform.</p>",
        "<h2>RPO evidence</h2>",
        f"<p>{escape(render.snapshot_line(report))}</p>",
    ]
    for check in report["verifications"]:
        mark = "passed" if check["passed"] else "failed"
        out.append(f'<p><span class="{mark}">{mark.upper()}</span> {escape(check["name"])}</p><ul>')
        out += [f"<li>{escape(e)}</li>" for e in check["evidence"]]
        out.append("</ul>")
    if report["steps"]:
        out += ["<h2>Steps</h2>", _table(render.STEP_HEADERS, render.step_rows(report))]
    if report["error"]:
        err = report["error"]
        out += [
            "<h2>What failed</h2>",
            f"<p>{escape(str(err['message']))}</p><p>hint: {escape(str(err['hint']))}<br>"
            f"runbook: <code>{escape(str(err['runbook']))}</code></p>",
        ]
    out += ["<h2>History</h2>", history_chart(history, report["rto"]["target_s"]), "</body></html>"]
    return "\n".join(out) + "\n"
