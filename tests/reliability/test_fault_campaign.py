"""A small fault campaign with a fixed seed: every trial completes, resumes to completion or stops cleanly.

`scripts/fault_campaign.py --seed S --recoveries N --saves M` runs longer
ones; the README's "Reliability" section has their figures.
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability import campaign

SEED = 20261203


def test_a_fixed_seed_campaign_of_snapshot_saves_loses_nothing(tmp_path: Path) -> None:
    """Every save fault once. Recovery trials cost a platform each (~30 s): `make test` has them as targeted
    tests instead (SIGKILL in every step, the full disk after the restore, SIGINT in a drill, the eso-sync
    fault); the script runs them drawn at random."""
    results = campaign.campaign(SEED, recoveries=0, saves=6, work=tmp_path)
    summary = results.summary()
    print(results.table())
    assert 0 == summary["lost-data"], results.table()
    assert 6 == summary["trials"]
    assert summary["completed"] + summary["resumed-then-completed"] == 6, results.table()
    assert 6 == len(summary["faults"]), summary
