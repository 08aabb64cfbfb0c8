"""What the history says: RTO percentiles per step and in total, the trend, the pass rate, and the regression gate.

The gate compares the latest RTO with the median of the runs before it:
a median, because one slow or fast outlier among the earlier drills must
not move the baseline, and only runs that produced an RTO (a failed run has
none) take part.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 3)


@dataclass(frozen=True)
class Spread:
    count: int
    p50: float | None
    p95: float | None
    latest: float | None

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(len(values), percentile(values, 50), percentile(values, 95), values[-1] if values else None)


@dataclass(frozen=True)
class Regression:
    latest_s: float | None
    baseline_s: float | None  # median RTO of the runs before the latest
    change_pct: float | None
    threshold_pct: float | None
    regressed: bool


@dataclass(frozen=True)
class Trends:
    runs: int
    passed: int
    pass_rate: float | None
    rto: Spread
    rpo: Spread
    steps: dict[str, Spread]
    trend: str  # "faster", "slower", "steady" or "too few runs"
    trend_pct: float | None
    regression: Regression
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _change(new: float, old: float) -> float:
    return round(100 * (new - old) / old, 1) if old else 0.0


def regression(rtos: list[float], threshold_pct: float | None) -> Regression:
    if len(rtos) < 2:
        return Regression(rtos[-1] if rtos else None, None, None, threshold_pct, False)
    latest, baseline = rtos[-1], statistics.median(rtos[:-1])
    change = _change(latest, baseline)
    regressed = threshold_pct is not None and change > threshold_pct
    return Regression(latest, round(baseline, 3), change, threshold_pct, regressed)


def of(reports: list[dict[str, Any]], *, fail_on_regression: float | None = None) -> Trends:
    """`reports` oldest first."""
    rtos = [r["rto"]["seconds"] for r in reports if r["rto"]["seconds"] is not None]
    rpos = [r["rpo"]["seconds"] for r in reports if r["rpo"]["seconds"] is not None]
    names: list[str] = []
    per_step: dict[str, list[float]] = {}
    for r in reports:
        for s in r["steps"]:
            if s["state"] in ("succeeded", "skipped"):
                if s["name"] not in per_step:
                    names.append(s["name"])
                per_step.setdefault(s["name"], []).append(s["duration_s"])
    passed = sum(1 for r in reports if r["verdict"] == "passed")
    trend, trend_pct = "too few runs", None
    if len(rtos) >= 4:  # the newer half against the older half, by their medians
        half = len(rtos) // 2
        trend_pct = _change(statistics.median(rtos[half:]), statistics.median(rtos[:half]))
        trend = "slower" if trend_pct > 10 else "faster" if trend_pct < -10 else "steady"
    rows = [
        {
            "id": r["id"],
            "type": r["type"],
            "started_at": r["started_at"],
            "verdict": r["verdict"],
            "rto_s": r["rto"]["seconds"],
            "rpo_s": r["rpo"]["seconds"],
        }
        for r in reports
    ]
    return Trends(
        runs=len(reports),
        passed=passed,
        pass_rate=round(passed / len(reports), 3) if reports else None,
        rto=Spread.of(rtos),
        rpo=Spread.of(rpos),
        steps={n: Spread.of(per_step[n]) for n in names},
        trend=trend,
        trend_pct=trend_pct,
        regression=regression(rtos, fail_on_regression),
        rows=rows,
    )
