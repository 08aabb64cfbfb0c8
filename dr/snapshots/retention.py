"""Which snapshots to keep: last-N plus grandfather-father-son, decided by a pure function.

All calendar buckets are UTC (days, ISO weeks, months), so a daylight-saving
change or a host in another timezone never moves a snapshot between buckets.
Two rules override every policy, including `--keep-last 0`: the newest good
snapshot is always kept, and nothing younger than the minimum age is deleted
(a snapshot just taken may still be being verified or copied).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Item:
    """What retention needs to know about one snapshot."""

    id: str
    created: datetime
    good: bool


@dataclass(frozen=True)
class Policy:
    keep_last: int = 7
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 6
    min_age: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class Decision:
    keep: dict[str, list[str]]  # id → reasons
    delete: list[str]  # ids, oldest first


def _buckets(
    items: Sequence[Item], count: int, key: Callable[[datetime], object], reason: str, keep: dict[str, list[str]]
) -> None:
    """Keep the newest good snapshot of each of the `count` most recent buckets."""
    seen: list[object] = []
    for item in items:  # newest first
        if not item.good:
            continue
        bucket = key(item.created)
        if bucket in seen:
            continue
        if len(seen) == count:
            break
        seen.append(bucket)
        keep.setdefault(item.id, []).append(f"{reason} {bucket}")


def decide(items: Sequence[Item], policy: Policy, now: datetime) -> Decision:
    ordered = sorted(items, key=lambda i: (i.created, i.id), reverse=True)
    keep: dict[str, list[str]] = {}
    for item in ordered[: policy.keep_last]:
        keep.setdefault(item.id, []).append("last")
    _buckets(ordered, policy.keep_daily, lambda t: t.strftime("%Y-%m-%d"), "daily", keep)
    _buckets(ordered, policy.keep_weekly, lambda t: f"{t.isocalendar()[0]}-W{t.isocalendar()[1]:02d}", "weekly", keep)
    _buckets(ordered, policy.keep_monthly, lambda t: t.strftime("%Y-%m"), "monthly", keep)
    newest_good = next((i for i in ordered if i.good), None)
    if newest_good is not None:
        keep.setdefault(newest_good.id, []).append("newest good")
    for item in ordered:
        if now - item.created < policy.min_age:
            keep.setdefault(item.id, []).append("younger than the minimum age")
    delete = [i.id for i in reversed(ordered) if i.id not in keep]
    return Decision(keep, delete)
