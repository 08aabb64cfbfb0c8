"""A drill's Prometheus metrics, and the alert rules `dr snapshot schedule` renders on them."""

from __future__ import annotations

import re
from pathlib import Path

import prometheus_client.parser
import yaml
from click.testing import CliRunner

from dr import cli
from dr.adapters import metrics
from tests.reports import synthetic


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in prometheus_client.parser.text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **extra: str) -> float:
    labels = tuple(sorted({"scenario": "total-loss", "provider": "sandbox", **extra}.items()))
    return found[(name, labels)]


def test_a_failed_drill_keeps_the_last_success_and_counts_the_failure(tmp_path: Path) -> None:
    textfile = tmp_path / "dr_drill.prom"
    passed = synthetic.report()
    passed["provider"] = "sandbox"
    metrics.record_drill(passed, textfile=textfile)
    first = samples(textfile)
    assert 1.0 == value(first, "dr_drill_last_run_success")
    assert 88.0 == value(first, "dr_drill_rto_seconds")
    assert 120.0 == value(first, "dr_drill_rto_target_seconds")
    assert 20.0 == value(first, "dr_drill_step_duration_seconds", step="cluster")
    success = value(first, "dr_drill_last_success_timestamp_seconds")
    failed = synthetic.report(fail="eso-sync")
    failed["provider"] = "sandbox"
    metrics.record_drill(failed, textfile=textfile)
    second = samples(textfile)
    assert 0.0 == value(second, "dr_drill_last_run_success")
    assert success == value(second, "dr_drill_last_success_timestamp_seconds")
    assert 1.0 == value(second, "dr_drill_failures_total")
    assert ("dr_drill_rto_seconds", (("provider", "sandbox"), ("scenario", "total-loss"))) not in second


def test_the_rendered_alert_rules_use_the_metrics_a_drill_writes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "dr.yaml").write_text("drills: {overdue_after: 14d}\n")
    result = CliRunner().invoke(
        cli.cli,
        ["--config", str(tmp_path / "dr.yaml"), "snapshot", "schedule", "--cron", "0 2 * * *", "--output", str(out)],
    )
    assert 0 == result.exit_code, result.output
    rule = yaml.safe_load((out / "prometheusrule.yaml").read_text())
    (group,) = [g for g in rule["spec"]["groups"] if g["name"] == "dr-drill"]
    alerts = {r["alert"]: r["expr"] for r in group["rules"]}
    assert {"DRDrillFailed", "DRDrillOverdue", "DRDrillRTOOverTarget"} == set(alerts)
    assert alerts["DRDrillOverdue"].endswith(f"> {14 * 86400}")
    textfile = tmp_path / "dr_drill.prom"
    metrics.record_drill(synthetic.report(), textfile=textfile)
    written = {name for name, _ in samples(textfile)}
    used = {m for expr in alerts.values() for m in re.findall(r"dr_drill_[a-z_]+", expr)}
    assert used <= written
