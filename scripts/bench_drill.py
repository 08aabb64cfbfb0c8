"""Benchmark: `dr drill` on the sandbox, N times into one state dir, then what the history says.

Per drill: its wall time and each phase (build, snapshot, destroy, recover =
the RTO, verify, teardown), the RPO it measured and its verdict. Then the
history over those drills (`dr report history`): RTO p50/p95 in total and per
step, and the cost of rendering every report format from the history, and
this process's peak RSS. Targets: every drill passes; a drill's own phases
(canaries, snapshot, verify, teardown) add under 10% to the recovery; the
renderings take milliseconds.

    .venv/bin/python scripts/bench_drill.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from dr import cli
from dr.reports import history, html, render

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "platform"


def dr(*args: str) -> Any:
    result = CliRunner().invoke(cli.cli, ["--log-format", "json", *args])
    if result.exit_code != 0:
        raise SystemExit(f"dr {' '.join(args)} failed ({result.exit_code}):\n{result.output[-3000:]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dr-bench-drill-"))
    config = work / "dr.yaml"
    config.write_text(json.dumps({"state_dir": str(work / "state"), "platform": {"repo": str(EXAMPLES)}}))
    phases = ["build", "canaries-before", "snapshot", "canaries-after", "destroy", "recover", "verify", "teardown"]
    print("| drill | total | " + " | ".join(phases) + " | RPO | verdict |")
    print("|---|---|" + "---|" * len(phases) + "---|---|")
    overhead = []
    for i in range(1, args.runs + 1):
        started = time.monotonic()
        report = json.loads(dr("--config", str(config), "drill", "-o", "json").stdout)
        total = time.monotonic() - started
        took = {p["name"]: p["duration_s"] for p in report["phases"]}
        cells = " | ".join(f"{took.get(p, 0):.1f} s" for p in phases)
        print(f"| {i} | {total:.1f} s | {cells} | {report['rpo']['seconds']:.2f} s | {report['verdict']} |", flush=True)
        own = sum(took[p] for p in ("canaries-before", "snapshot", "canaries-after", "verify", "teardown"))
        overhead.append(100 * own / took["recover"])
    trend = json.loads(dr("--config", str(config), "report", "history", "-o", "json").stdout)
    print()
    print("| | runs | p50 | p95 |")
    print("|---|---|---|---|")
    print(f"| RTO total | {trend['rto']['count']} | {trend['rto']['p50']:.1f} s | {trend['rto']['p95']:.1f} s |")
    for name, spread in trend["steps"].items():
        print(f"| {name} | {spread['count']} | {spread['p50']:.1f} s | {spread['p95']:.1f} s |")
    reports = history.History(work / "state").reports()
    latest = reports[-1]
    started = time.perf_counter()
    for _ in range(100):
        render.text(latest)
        render.markdown(latest)
        render.junit(latest)
        html.page(latest, reports)
    per = (time.perf_counter() - started) * 10  # ms per round of the four formats
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = (work / "state" / "history.sqlite").stat().st_size
    print(
        f"\npass rate {trend['pass_rate']:.0%}; the drill's own phases add {max(overhead):.1f}% at most to the"
        f" recovery; text+md+junit+html render in {per:.1f} ms; history {size}"
        f" bytes; peak RSS {rss:.0f} MiB (measured {time.strftime('%Y-%m-%d')})"
    )


if __name__ == "__main__":
    main()
