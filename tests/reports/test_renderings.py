"""The report record and its renderings: schema, Markdown = JSON, JUnit, self-contained HTML seen by Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import png
import pytest

from dr.reports import html, record, render
from tests.reports import synthetic


def test_a_report_is_valid_against_its_schema_passing_or_failing() -> None:
    for report in (synthetic.report(), synthetic.report(fail="eso-sync")):
        jsonschema.validate(report, record.schema())
    passed, failed = synthetic.report(), synthetic.report(fail="eso-sync")
    assert "passed" == passed["verdict"]
    assert "failed" == failed["verdict"]
    assert "ExternalSecret x not Ready" == failed["error"]["message"]
    assert 88.0 == passed["rto"]["seconds"]  # 20+10+15+12+18+5+8 from the run's start to app-health
    assert 3595.0 == passed["rpo"]["seconds"]  # snapshot an hour before the run, disaster 5 s before it
    assert passed["rto"]["met"] is True
    assert synthetic.report(scale=2.0)["rto"]["met"] is False  # 176 s against a 120 s target
    assert "failed" == synthetic.report(scale=2.0)["verdict"]  # a breached target fails the drill


def test_markdown_shows_the_numbers_of_the_json() -> None:
    report = synthetic.report(fail="eso-sync")
    text = render.markdown(report)
    for step in report["steps"]:
        row = next(line for line in text.splitlines() if line.startswith(f"| {step['name']} |"))
        assert f"{step['duration_s']:.1f} s" in row
        assert f"{step['waited_s']:.1f} s" in row
        assert step["state"] in row
    assert f"{report['rpo']['seconds']:.1f} s" in text
    assert report["rpo"]["snapshot"]["sha256"] in text
    assert "ExternalSecret x not Ready" in text


def test_junit_has_a_testcase_per_step_verification_and_target() -> None:
    report = synthetic.report(fail="eso-sync")
    root = ET.fromstring(render.junit(report))
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(report["steps"]) + len(report["verifications"]) + 2 == len(cases) == int(suite.get("tests", "0"))
    failing = {c.get("name") for c in cases if c.find("failure") is not None}
    assert {"eso-sync", "canaries after the snapshot are absent"} == failing
    assert str(len(failing)) == suite.get("failures")
    assert {"app-health"} == {c.get("name") for c in cases if c.find("skipped") is not None}
    eso = next(c for c in cases if c.get("name") == "eso-sync")
    assert "hint: h" in (eso.findtext("failure") or "")


def test_html_is_one_file_without_external_assets() -> None:
    page = html.page(synthetic.report(), [synthetic.report(1.2), synthetic.report()])
    assert "<svg" in page
    assert not re.search(r"<script|<link|<img|@import|url\(http", page)
    assert set(re.findall(r'(?:href|src)="([^"#][^"]*)"', page)) == set()


def _critical_pixels(path: Path) -> int:
    width, _height, rows, _ = png.Reader(filename=str(path)).asRGBA8()
    target = tuple(int(html.CRITICAL[i : i + 2], 16) for i in (1, 3, 5))
    count = 0
    for row in rows:
        for x in range(width):
            r, g, b = row[4 * x], row[4 * x + 1], row[4 * x + 2]
            if abs(r - target[0]) + abs(g - target[1]) + abs(b - target[2]) < 30:
                count += 1
    return count


def test_the_html_opens_in_headless_chromium_and_the_screenshot_shows_the_timeline(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: `make system-deps` installs Debian's package (make test runs it)")
    with_timeline, without = tmp_path / "report.html", tmp_path / "empty.html"
    with_timeline.write_text(html.page(synthetic.report(), []))
    bare = synthetic.report()
    bare["steps"], bare["phases"], bare["rto"]["critical_path"] = [], [], []
    without.write_text(html.page(bare, []))
    shots = []
    for page in (with_timeline, without):
        shot = page.with_suffix(".png")
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1100,1200",
             f"--screenshot={shot}", page.as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        shots.append(_critical_pixels(shot))
    # The critical path's bars are drawn in their own colour: thousands of pixels of it with a timeline, none without.
    assert shots[0] > 2000, shots
    assert shots[1] == 0, shots
