"""Retention (last-N + GFS) as a pure function, table-tested; all buckets are UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dr.snapshots import retention

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NO_AGE = timedelta(0)


def items(*stamps: str, bad: tuple[str, ...] = ()) -> list[retention.Item]:
    return [retention.Item(s, datetime.fromisoformat(s).replace(tzinfo=UTC), s not in bad) for s in stamps]


def deleted(policy: retention.Policy, snaps: list[retention.Item], now: datetime = NOW) -> list[str]:
    return retention.decide(snaps, policy, now).delete


def daily_run(days: int, hour: int = 2) -> list[retention.Item]:
    start = NOW.replace(hour=hour) - timedelta(days=days - 1)
    return [
        retention.Item((start + timedelta(days=d)).isoformat(), start + timedelta(days=d), True) for d in range(days)
    ]


@pytest.mark.parametrize(
    ("policy", "snaps", "expected"),
    [
        # keep-last only
        (
            retention.Policy(3, 0, 0, 0, NO_AGE),
            items("2026-11-27T02:00", "2026-11-28T02:00", "2026-11-29T02:00", "2026-11-30T02:00"),
            ["2026-11-27T02:00"],
        ),
        # twice on one day: daily keeps only the newest of the day
        (
            retention.Policy(0, 2, 0, 0, NO_AGE),
            items("2026-11-30T02:00", "2026-11-30T14:00", "2026-11-29T02:00"),
            ["2026-11-30T02:00"],
        ),
        # nothing to delete
        (retention.Policy(7, 7, 4, 6, NO_AGE), items("2026-11-30T02:00"), []),
        # empty store
        (retention.Policy(0, 0, 0, 0, NO_AGE), [], []),
    ],
    ids=["keep-last", "twice-a-day", "nothing", "empty"],
)
def test_policy_table(policy: retention.Policy, snaps: list[retention.Item], expected: list[str]) -> None:
    """Each row: which snapshots a policy deletes, oldest first."""
    assert expected == deleted(policy, snaps)


def test_gfs_over_a_year_of_nightly_snapshots() -> None:
    """365 nightly snapshots, 7 daily + 4 weekly + 12 monthly: at most 23 kept, spread as GFS says."""
    snaps = daily_run(365)
    decision = retention.decide(snaps, retention.Policy(0, 7, 4, 12, NO_AGE), NOW)
    kept = sorted(decision.keep)
    assert len(kept) <= 23
    assert len(kept) + len(decision.delete) == 365
    months = {k[:7] for k in kept}
    assert 12 <= len(months)  # one per month for the last 12 months
    assert sorted(k for k in kept)[-7:] == sorted(s.id for s in snaps)[-7:]  # the last 7 days


def test_newest_good_is_never_deleted_even_with_keep_last_0() -> None:
    """Every keep count at 0 and no minimum age: the newest good snapshot still stays."""
    snaps = items("2026-11-28T02:00", "2026-11-29T02:00", "2026-11-30T02:00")
    decision = retention.decide(snaps, retention.Policy(0, 0, 0, 0, NO_AGE), NOW)
    assert ["2026-11-28T02:00", "2026-11-29T02:00"] == decision.delete
    assert ["newest good"] == decision.keep["2026-11-30T02:00"]


def test_newest_good_skips_failed_snapshots() -> None:
    """When the newest snapshot failed verification, the newest GOOD one is the one protected."""
    snaps = items("2026-11-29T02:00", "2026-11-30T02:00", bad=("2026-11-30T02:00",))
    decision = retention.decide(snaps, retention.Policy(0, 0, 0, 0, NO_AGE), NOW)
    assert ["2026-11-30T02:00"] == decision.delete
    assert "newest good" in decision.keep["2026-11-29T02:00"]


def test_nothing_younger_than_the_minimum_age_is_deleted() -> None:
    """A snapshot taken minutes ago survives any policy."""
    snaps = items("2026-12-01T11:50", "2026-12-01T11:55", "2026-11-20T02:00")
    decision = retention.decide(snaps, retention.Policy(0, 0, 0, 0, timedelta(hours=1)), NOW)
    assert ["2026-11-20T02:00"] == decision.delete


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Australia/Sydney"])
def test_daylight_saving_changes_do_not_move_buckets(zone: str) -> None:
    """Snapshots at 02:30 local time across a DST change bucket by their UTC day: one per UTC day kept."""
    tz = ZoneInfo(zone)
    local = [
        datetime(2026, month, day, 2, 30, tzinfo=tz)
        for month, day in ((3, 27), (3, 28), (3, 29), (3, 30), (10, 24), (10, 25), (10, 26), (4, 4), (4, 5), (4, 6))
    ]
    snaps = [retention.Item(t.astimezone(UTC).isoformat(), t.astimezone(UTC), True) for t in local]
    decision = retention.decide(snaps, retention.Policy(0, len(snaps), 0, 0, NO_AGE), NOW)
    utc_days = {s.created.date() for s in snaps}
    assert len(utc_days) == len(decision.keep)  # exactly one kept per distinct UTC day
    assert [] == decision.delete


def test_weekly_buckets_are_iso_weeks() -> None:
    """Sunday and the next Monday fall in different ISO weeks; two weeks kept means both."""
    snaps = items("2026-11-29T02:00", "2026-11-30T02:00")  # Sun (W48), Mon (W49)
    decision = retention.decide(snaps, retention.Policy(0, 0, 2, 0, NO_AGE), NOW)
    assert [] == decision.delete
    assert any("weekly 2026-W48" in r for r in decision.keep["2026-11-29T02:00"])
