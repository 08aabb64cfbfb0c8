"""The waiting helper, on fake time: deadline, backoff, progress, transient errors, cancellation."""

from __future__ import annotations

import threading

import pytest

from dr import errors, waiting


class FakeTime:
    """A clock that advances only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_first_truthy_result() -> None:
    """The probe's first truthy value is returned, after backing off between probes."""
    t = FakeTime()
    results = iter([None, False, waiting.Pending("1/3"), {"ready": 3}])
    got = waiting.wait_until(
        lambda: next(results), what="x", timeout=60, interval=1, backoff=2, max_interval=3, clock=t.clock, sleep=t.sleep
    )
    assert {"ready": 3} == got
    assert [1, 2, 3] == t.sleeps


def test_deadline_names_what_was_awaited_and_the_last_detail() -> None:
    """On timeout, DeadlineExceeded says what was awaited and what the probe last saw."""
    t = FakeTime()
    with pytest.raises(errors.DeadlineExceeded, match=r"after 10s waiting for vault pods; last seen: 2/3 unsealed"):
        waiting.wait_until(
            lambda: waiting.Pending("2/3 unsealed"),
            what="vault pods",
            timeout=10,
            interval=4,
            clock=t.clock,
            sleep=t.sleep,
        )
    assert 10.0 == t.now  # the last sleep is cut to the deadline, not past it


def test_transient_errors_mean_not_yet() -> None:
    """A probe raising TransientError is retried, and its message is the reported detail."""
    t = FakeTime()
    calls = {"n": 0}

    def probe() -> bool:
        calls["n"] += 1
        if calls["n"] < 3:
            raise errors.TransientError("connection refused")
        return True

    seen: list[waiting.Progress] = []
    assert waiting.wait_until(probe, what="api", timeout=30, clock=t.clock, sleep=t.sleep, progress=seen.append)
    assert ["connection refused", "connection refused"] == [p.detail for p in seen]
    assert [1, 2] == [p.probes for p in seen]


def test_other_errors_end_the_wait() -> None:
    """A PermanentError from the probe is not swallowed."""
    t = FakeTime()

    def probe() -> None:
        raise errors.PermanentError("403 permission denied")

    with pytest.raises(errors.PermanentError, match="403"):
        waiting.wait_until(probe, what="api", timeout=30, clock=t.clock, sleep=t.sleep)


def test_absolute_deadline_wins_when_earlier() -> None:
    """Given both, the earlier of deadline and timeout ends the wait."""
    t = FakeTime()
    with pytest.raises(errors.DeadlineExceeded):
        waiting.wait_until(
            lambda: None, what="x", timeout=100, deadline=5, interval=1, max_interval=1, clock=t.clock, sleep=t.sleep
        )
    assert 5.0 == t.now


def test_cancel_stops_a_real_wait_at_once() -> None:
    """Setting the cancel event interrupts a (real-time) wait well before its deadline."""
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    with pytest.raises(errors.Interrupted, match="waiting for gate"):
        waiting.wait_until(lambda: None, what="gate", timeout=30, interval=5, cancel=cancel)
