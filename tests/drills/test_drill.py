"""`dr drill` on the sandbox: a passing drill, one that fails in eso-sync, Ctrl-C, and the cleanup of a crashed one.

Each drill really builds a source platform (real OpenBao, 3 replicas),
snapshots it, destroys it and recovers it into a second sandbox; the tests
check the report it writes and that nothing it started is left running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from click.testing import CliRunner, Result

from dr import cli
from dr.adapters import sandbox_process
from dr.reports import history, record
from tests.recovery.test_bootstrap import REPO, write_config


def one_replica(tmp_path: Path) -> Path:
    """examples/platform with one Vault replica: the failure-path drills test dr, not Raft replication."""
    repo = tmp_path / "platform"
    shutil.copytree(REPO / "examples" / "platform", repo)
    app = repo / "infrastructure/platform/vault/app.yaml"
    doc = yaml.safe_load(app.read_text())
    doc["spec"]["source"]["helm"]["valuesObject"]["server"]["ha"]["replicas"] = 1
    app.write_text(yaml.safe_dump(doc, sort_keys=False))
    return repo


def drill(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli.cli, ["--config", str(config), "--log-format", "json", "drill", *args])


def workspace(state: Path) -> Path:
    (found,) = (state / "drills").iterdir()
    return found


def processes_under(path: Path) -> list[str]:
    """Command lines of live processes that mention `path` (sandbox daemons, OpenBao servers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in argv:
            found.append(f"{proc.name}: {argv}")
    return found


def assert_nothing_left(root: Path) -> None:
    assert [] == processes_under(root)
    for role in ("source", "target"):
        assert not sandbox_process.status(root / role / "sandbox").running
        assert not (root / role / "sandbox").exists()
    assert not (root / "source" / "keys").exists()  # a throwaway Vault's keys do not outlive the drill
    assert not (root / "snapshots").exists()
    assert json.loads((root / "drill.json").read_text())["clusters"] == []


def _check(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in report["verifications"] if name in v["name"])


def test_a_sandbox_drill_measures_rto_and_rpo_proves_the_canaries_and_leaves_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path, drills={"canaries": 2})
    reports = tmp_path / "reports"
    result = drill(config, "--report-dir", str(reports), "--target-rto", "10m")
    assert 0 == result.exit_code, result.output[-3000:]
    report = json.loads((reports / "report.json").read_text())
    jsonschema.validate(report, record.schema())
    assert ("drill", "passed", "total-loss", "sandbox") == (
        report["type"],
        report["verdict"],
        report["scenario"],
        report["provider"],
    )
    assert 600.0 == report["rto"]["target_s"]
    assert report["rto"]["met"]
    assert report["rpo"]["met"]
    assert 8 == len(report["steps"])
    assert {"succeeded", "skipped"} >= {s["state"] for s in report["steps"]}  # skipped: its end state already held
    assert report["rto"]["critical_path"][-1] == "app-health"
    assert report["versions"]["vault"]
    assert report["versions"]["kubernetes"]
    # RPO measured: from the snapshot's creation to the moment the drill destroyed the source.
    snap = report["rpo"]["snapshot"]
    assert len(snap["sha256"]) == 64
    assert snap["size"] > 0
    assert report["rpo"]["seconds"] > 0
    assert snap["created_at"] < report["rpo"]["disaster_at"]
    # Both ways: what was written before the snapshot came back, what was written after it did not.
    before = _check(report, "before the snapshot")
    assert before["passed"]
    assert 2 == sum("present, value matches" in e for e in before["evidence"])
    after = _check(report, "after the snapshot")
    assert after["passed"]
    assert 2 == sum(e.endswith(": absent") for e in after["evidence"])
    synced = _check(report, "Kubernetes Secrets")
    assert synced["passed"]
    assert 2 == sum("synced, value matches" in e for e in synced["evidence"])
    assert 2 == sum("absent; ESO reports SecretSyncedError" in e for e in synced["evidence"])
    assert _check(report, "Application")["evidence"][0] == "10 of 10 Applications Healthy and Synced"
    assert ["build", "canaries-before", "snapshot", "canaries-after", "destroy", "recover", "verify", "teardown"] == [
        p["name"] for p in report["phases"]
    ]
    assert {"succeeded"} == {p["outcome"] for p in report["phases"]}
    # Every format beside it, and the same report in the history.
    assert "<svg" in (reports / "report.html").read_text()
    ET.fromstring((reports / "junit.xml").read_text())
    assert report == history.History(tmp_path / "state").get(report["id"])
    assert_nothing_left(workspace(tmp_path / "state"))


def test_a_drill_failing_in_eso_sync_says_so_exits_non_zero_and_still_tears_down(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        platform={"repo": str(one_replica(tmp_path))},
        drills={"canaries": 1},
        steps={"eso-sync": {"timeout": "15s", "attempts": 1}},
    )
    result = drill(config, "--fault", "eso-unavailable", "-o", "json")
    assert 1 == result.exit_code, result.output[-3000:]
    root = workspace(tmp_path / "state")
    report = json.loads((root / "report.json").read_text())
    jsonschema.validate(report, record.schema())
    assert "failed" == report["verdict"]
    assert "eso-sync" in report["error"]["message"]
    steps = {s["name"]: s for s in report["steps"]}
    assert "failed" == steps["eso-sync"]["state"]
    assert steps["eso-sync"]["error"]["message"]
    assert "pending" == steps["app-health"]["state"]
    assert report["verifications"] == []  # nothing to verify after a failed recovery
    phases = {p["name"]: p["outcome"] for p in report["phases"]}
    assert ("failed", "succeeded") == (phases["recover"], phases["teardown"])
    assert "verify" not in phases
    junit = ET.fromstring((root / "junit.xml").read_text())
    assert ["eso-sync"] == [c.get("name") for c in junit.iter("testcase") if c.find("failure") is not None]
    assert_nothing_left(root)


def test_a_recovery_past_the_multiple_of_the_target_rto_is_aborted_and_recorded_as_such(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, platform={"repo": str(one_replica(tmp_path))}, drills={"canaries": 1, "abort_after": 2}
    )
    result = drill(config, "--target-rto", "3s")
    assert 1 == result.exit_code, result.output[-3000:]
    root = workspace(tmp_path / "state")
    report = json.loads((root / "report.json").read_text())
    assert "aborted" == report["verdict"]
    assert "aborted after 6 s, 2 times the target RTO of 3 s" in report["error"]["message"]
    assert report["rto"]["seconds"] is None  # a recovery that did not finish has no RTO
    phases = {p["name"]: p for p in report["phases"]}
    assert "failed" == phases["recover"]["outcome"]
    assert "aborted after 6 s" in phases["recover"]["detail"]
    recovery = json.loads((root / "target" / "runs" / report["recovery_run_id"] / "checkpoint.json").read_text())
    assert "stopped" == recovery["status"]
    assert_nothing_left(root)


def test_ctrl_c_during_a_drill_stops_it_and_removes_what_it_made(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    log = (tmp_path / "drill.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dr", "--config", str(config), "--log-format", "json", "drill"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while b'"step": "argo-sync"' not in (tmp_path / "drill.log").read_bytes():
            assert proc.poll() is None, (tmp_path / "drill.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the drill never reached argo-sync"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert 130 == proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    root = workspace(tmp_path / "state")
    report = json.loads((root / "report.json").read_text())
    assert "stopped" == report["verdict"]
    assert {"build": "failed", "teardown": "succeeded"} == {p["name"]: p["outcome"] for p in report["phases"]}
    assert_nothing_left(root)


def test_drill_cleanup_removes_what_a_crashed_drill_left_and_spares_a_running_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    crashed, running = state / "drills" / "crashed", state / "drills" / "running"
    for root, pid in ((crashed, 2**22 + 1), (running, os.getpid())):
        sandbox = root / "target" / "sandbox"
        sandbox_process.up(sandbox)
        (root / "source" / "keys").mkdir(parents=True)
        marker = {"id": root.name, "pid": pid, "status": "running", "clusters": []}
        marker["clusters"] = [{"role": "target", "provider": "sandbox", "where": str(sandbox)}]
        (root / "drill.json").write_text(json.dumps(marker))
    try:
        result = CliRunner().invoke(cli.cli, ["drill", "cleanup", "--state-dir", str(state)])
        assert 0 == result.exit_code, result.output
        assert f"removed crashed: target sandbox {crashed / 'target' / 'sandbox'}" in result.output
        assert not sandbox_process.status(crashed / "target" / "sandbox").running
        assert not (crashed / "source" / "keys").exists()
        assert "cleaned" == json.loads((crashed / "drill.json").read_text())["status"]
        assert sandbox_process.status(running / "target" / "sandbox").running  # its own teardown will run
        again = CliRunner().invoke(cli.cli, ["drill", "cleanup", "--state-dir", str(state)])
        assert "nothing left by earlier drills" in again.output
    finally:
        sandbox_process.down(running / "target" / "sandbox")
        sandbox_process.down(crashed / "target" / "sandbox")
