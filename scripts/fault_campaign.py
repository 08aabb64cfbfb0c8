"""Fault campaign: recoveries and snapshot saves with one fault each, injected at seeded random points.

Prints every trial and the totals: trials, faults by kind, completed,
resumed-then-completed, stopped-cleanly, lost-data (which must be 0; the
script exits 1 otherwise). Needs root for the disk-full trials (tmpfs).

    .venv/bin/python scripts/fault_campaign.py [--seed 1] [--recoveries 10] [--saves 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the campaign lives beside the tests

from tests.reliability import campaign


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--recoveries", type=int, default=10)
    parser.add_argument("--saves", type=int, default=30)
    parser.add_argument("--only", nargs="*", default=[], help="draw only these fault kinds")
    args = parser.parse_args()
    started = time.monotonic()
    results = campaign.campaign(args.seed, args.recoveries, args.saves, only=tuple(args.only))
    print()
    print(results.table())
    print(f"\nseed {args.seed}, {time.monotonic() - started:.0f} s (measured {time.strftime('%Y-%m-%d')})")
    sys.exit(1 if results.summary()["lost-data"] else 0)


if __name__ == "__main__":
    main()
