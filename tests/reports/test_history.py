"""The run history in SQLite, its percentiles and trend, and the regression gate, on synthetic runs."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner, Result

from dr import cli
from dr.reports import history, trends
from tests.reports import synthetic


def _fill(state: Path, scales: list[float], *, fail_last: bool = False) -> list[dict[str, object]]:
    past = history.History(state)
    added = []
    for i, scale in enumerate(scales):
        fail = "eso-sync" if fail_last and i == len(scales) - 1 else None
        report = synthetic.report(scale, fail=fail, start=synthetic.START + timedelta(days=i))
        past.add(report)
        added.append(report)
    return added


def dr(state: Path, *args: str) -> Result:
    return CliRunner().invoke(cli.cli, [*args, "--state-dir", str(state)])


def test_history_keeps_every_report_owner_only_and_a_rewrite_replaces_its_row(tmp_path: Path) -> None:
    state = tmp_path / "state"
    added = _fill(state, [1.0, 1.1])
    past = history.History(state)
    assert 0o600 == stat.S_IMODE(past.path.stat().st_mode)
    assert [r["id"] for r in added] == [r["id"] for r in past.reports()]
    changed = {**added[0], "verdict": "failed"}
    past.add(changed)
    assert ["failed", "passed"] == [r["verdict"] for r in past.reports()]
    assert added[1]["id"] == past.get()["id"]  # the latest by start time
    assert [added[1]["id"]] == [r["id"] for r in past.reports(last=1)]


def test_percentiles_trend_and_pass_rate() -> None:
    reports = [synthetic.report(s, start=synthetic.START + timedelta(days=i)) for i, s in enumerate([1, 1, 2, 2])]
    found = trends.of(reports)
    assert (4, 2, 0.5) == (found.runs, found.passed, found.pass_rate)  # the two slow ones breach the 120 s RTO
    assert 132.0 == found.rto.p50  # RTOs 88, 88, 176, 176
    assert 176.0 == found.rto.p95
    assert 30.0 == found.steps["cluster"].p50  # cluster 20, 20, 40, 40
    assert ("slower", 100.0) == (found.trend, found.trend_pct)
    assert 88.0 == trends.percentile([88.0], 95)


def test_the_gate_fails_when_the_latest_rto_is_worse_than_the_median_by_more_than_pct(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _fill(state, [1.0, 1.0, 3.0, 1.0, 1.3])  # median of the earlier four: 88 s; latest 114.4 s: +30%
    ok = dr(state, "report", "history", "--fail-on-regression", "50")
    assert 0 == ok.exit_code, ok.output
    assert "+30.0% (gate 50%): ok" in ok.output
    bad = dr(state, "report", "history", "--fail-on-regression", "25")
    assert 1 == bad.exit_code, bad.output
    assert "REGRESSED" in bad.output
    data = json.loads(dr(state, "report", "history", "-o", "json").output)
    assert 88.0 == data["regression"]["baseline_s"]
    assert 5 == data["runs"]
    assert 20.0 == data["steps"]["cluster"]["p50"]  # 20, 20, 60, 20, 26


def test_a_failed_latest_run_has_no_rto_and_the_gate_compares_runs_with_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _fill(state, [1.0, 1.0, 1.0], fail_last=True)
    result = dr(state, "report", "history", "--fail-on-regression", "10")
    assert 0 == result.exit_code, result.output
    assert "runs 3, passed 2 (67%)" in result.output


def test_dr_report_renders_the_latest_or_a_named_run_to_stdout_or_a_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first, latest = _fill(state, [1.0, 1.5])
    text = dr(state, "report")
    assert 0 == text.exit_code, text.output
    assert f"drill {latest['id']}" in text.output
    named = dr(state, "report", str(first["id"]), "--format", "json")
    assert first["id"] == json.loads(named.output)["id"]
    out = tmp_path / "r.html"
    written = dr(state, "report", "--format", "html", "--output", str(out))
    assert 0 == written.exit_code, written.output
    assert out.read_text().count("<svg") == 2  # the timeline and the history chart
    for fmt in ("md", "junit"):
        assert 0 == dr(state, "report", "--format", fmt).exit_code


def test_dr_report_without_history_or_with_an_unknown_run_is_a_clear_error(tmp_path: Path) -> None:
    empty = dr(tmp_path / "none", "report")
    assert 2 == empty.exit_code
    assert "no run history at" in empty.output
    assert "Traceback" not in empty.output
    _fill(tmp_path / "state", [1.0])
    unknown = dr(tmp_path / "state", "report", "nope")
    assert 2 == unknown.exit_code
    assert "no report 'nope'" in unknown.output
    none = dr(tmp_path / "none", "report", "history")
    assert 2 == none.exit_code
    assert "no reports" in none.output


def test_an_unreadable_history_is_named_and_never_hides_a_new_report(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / history.FILENAME).write_bytes(b"not a database at all" * 100)
    report = synthetic.report()
    assert [report] == history.remember(state, report)  # logged, and the caller still has its report
    result = dr(state, "report")
    assert 2 == result.exit_code
    assert f"the run history {state / history.FILENAME} is unreadable" in result.output
    assert "Traceback" not in result.output
