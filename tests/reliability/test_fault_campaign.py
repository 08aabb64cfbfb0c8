"""A small fault campaign with a fixed seed: every trial completes, resumes to completion or stops cleanly.

`scripts/fault_campaign.py --seed S --recoveries N --saves M` runs longer
ones; the README's "Reliability" section has their figures.
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability import campaign

SEED = 20261203  # draws: the Vault pod killed mid-restore for the recovery, every save fault once


def test_a_fixed_seed_campaign_loses_nothing(tmp_path: Path) -> None:
    results = campaign.campaign(SEED, recoveries=1, saves=6, work=tmp_path)
    summary = results.summary()
    print(results.table())
    assert 0 == summary["lost-data"], results.table()
    assert 7 == summary["trials"]
    assert summary["completed"] + summary["resumed-then-completed"] >= 6, results.table()
    assert 7 == len(summary["faults"]), summary  # every save fault once, and one recovery fault
