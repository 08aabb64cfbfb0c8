"""Prometheus metrics for unattended runs: a node-exporter textfile and/or a Pushgateway.

A nightly job's metrics must survive the job: its pod is gone by the time
Prometheus would scrape it, and a failed run must not erase the time of the
last success (the stale-snapshot alert depends on it). So the textfile is
rewritten atomically carrying the previous success forward, and the
Pushgateway gets a push-add that replaces only the metrics of this outcome.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dr import errors, files

# prometheus_client is imported on first use: only unattended saves record metrics.

PREFIX = "dr_snapshot"


def _previous(path: Path) -> dict[str, float]:
    """Samples of an earlier textfile, by metric name (labels are fixed per file)."""
    import prometheus_client.parser

    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    values: dict[str, float] = {}
    try:
        for family in prometheus_client.parser.text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name] = sample.value
    except ValueError:
        return {}  # a damaged file is replaced, not trusted
    return values


def record(
    outcome: Mapping[str, float],
    *,
    labels: Mapping[str, str],
    ok: bool,
    textfile: Path | None = None,
    pushgateway: str | None = None,
    job: str = PREFIX,
) -> None:
    """Record one run. `outcome` holds this run's gauges (`duration_seconds`, `size_bytes`, …)."""
    import prometheus_client

    names = list(labels)
    registry = prometheus_client.CollectorRegistry()
    previous = _previous(textfile) if textfile else {}

    def gauge(name: str, doc: str, value: float) -> None:
        metric = prometheus_client.Gauge(f"{PREFIX}_{name}", doc, names, registry=registry)
        metric.labels(**labels).set(value)

    gauge("last_attempt_timestamp_seconds", "Start of the latest save attempt.", outcome["attempt_timestamp_seconds"])
    gauge("last_run_success", "1 if the latest save succeeded, 0 if it failed.", 1.0 if ok else 0.0)
    failures = previous.get(f"{PREFIX}_failures_total", 0.0) + (0.0 if ok else 1.0)
    counter = prometheus_client.Counter(f"{PREFIX}_failures", "Failed saves (textfile only).", names, registry=registry)
    counter.labels(**labels).inc(failures)
    if ok:
        gauge(
            "last_success_timestamp_seconds", "End of the latest successful save.", outcome["success_timestamp_seconds"]
        )
        gauge("last_duration_seconds", "Duration of the latest successful save.", outcome["duration_seconds"])
        gauge("last_size_bytes", "Size of the latest successful snapshot.", outcome["size_bytes"])
    else:
        for name, doc in (
            ("last_success_timestamp_seconds", "End of the latest successful save."),
            ("last_duration_seconds", "Duration of the latest successful save."),
            ("last_size_bytes", "Size of the latest successful snapshot."),
        ):
            if f"{PREFIX}_{name}" in previous:
                gauge(name, doc, previous[f"{PREFIX}_{name}"])
    _write(registry, textfile, pushgateway, job, labels)


def _write(registry: Any, textfile: Path | None, pushgateway: str | None, job: str, labels: Mapping[str, str]) -> None:
    import prometheus_client

    if textfile is not None:
        files.write_atomic(textfile, prometheus_client.generate_latest(registry), mode=0o644)
    if pushgateway:
        try:
            # push-add: a failed run replaces only what it pushes, so the last success survives.
            prometheus_client.pushadd_to_gateway(pushgateway, job=job, registry=registry, grouping_key=dict(labels))
        except OSError as exc:
            raise errors.TransientError(f"cannot push metrics to {pushgateway}: {exc}") from exc


DRILL_PREFIX = "dr_drill"


def record_drill(report: Mapping[str, Any], *, textfile: Path | None = None, pushgateway: str | None = None) -> None:
    """A drill's outcome, RTO, RPO and per-step durations; the last success and the failure count carry over."""
    import prometheus_client

    registry = prometheus_client.CollectorRegistry()
    labels = {"scenario": str(report.get("scenario") or ""), "provider": str(report.get("provider") or "")}
    names = list(labels)
    previous = _previous(textfile) if textfile else {}
    ok = report["verdict"] == "passed"
    now = time.time()

    def gauge(name: str, doc: str, value: float | None, extra: Mapping[str, str] | None = None) -> None:
        if value is None:
            return
        metric = prometheus_client.Gauge(f"{DRILL_PREFIX}_{name}", doc, [*names, *(extra or {})], registry=registry)
        metric.labels(**labels, **(extra or {})).set(value)

    gauge("last_run_timestamp_seconds", "End of the latest drill.", now)
    gauge("last_run_success", "1 if the latest drill passed, 0 if not.", 1.0 if ok else 0.0)
    last_success = now if ok else previous.get(f"{DRILL_PREFIX}_last_success_timestamp_seconds")
    gauge("last_success_timestamp_seconds", "End of the latest passing drill.", last_success)
    gauge("rto_seconds", "RTO measured by the latest drill.", report["rto"]["seconds"])
    gauge("rpo_seconds", "RPO measured by the latest drill.", report["rpo"]["seconds"])
    gauge("rto_target_seconds", "The RTO target the drill is judged against.", report["rto"]["target_s"])
    gauge("rpo_target_seconds", "The RPO target the drill is judged against.", report["rpo"]["target_s"])
    steps = prometheus_client.Gauge(
        f"{DRILL_PREFIX}_step_duration_seconds", "Duration of each recovery step.", [*names, "step"], registry=registry
    )
    for step in report["steps"]:
        steps.labels(**labels, step=step["name"]).set(step["duration_s"])
    failures = previous.get(f"{DRILL_PREFIX}_failures_total", 0.0) + (0.0 if ok else 1.0)
    counter = prometheus_client.Counter(
        f"{DRILL_PREFIX}_failures", "Drills that did not pass.", names, registry=registry
    )
    counter.labels(**labels).inc(failures)
    _write(registry, textfile, pushgateway, DRILL_PREFIX, labels)
