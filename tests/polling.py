"""One way for tests to wait for an eventually-consistent system (controllers, OpenBao followers)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 60, interval: float = 0.1) -> T:
    """Poll until `probe` returns something truthy; fail naming what never happened and the last value seen."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")
