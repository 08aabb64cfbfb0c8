"""The one waiting helper: poll a probe until it holds, a deadline passes or a stop is asked.

Recovery is mostly waiting (for CRDs, pods, elections, syncs). Every wait in
the project goes through `wait_until` so that all of them share the same
behaviour: a deadline with a message saying what was awaited and what was
last seen, backoff between probes, a progress callback for live output, and
immediate cancellation on SIGINT/SIGTERM. Time and sleep are injectable so
tests fake them instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from dr import errors

T = TypeVar("T")


@dataclass(frozen=True)
class Pending:
    """What a probe returns while not done yet, saying what it saw ("3/7 apps healthy")."""

    detail: str


@dataclass(frozen=True)
class Progress:
    """One tick of a wait, handed to the progress callback."""

    what: str
    elapsed: float
    probes: int
    remaining: float | None
    detail: str | None


def wait_until(
    probe: Callable[[], T | Pending | None],
    *,
    what: str,
    timeout: float | None = None,
    deadline: float | None = None,
    interval: float = 0.5,
    max_interval: float = 5.0,
    backoff: float = 1.5,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] | None = None,
    runbook: str | None = None,
) -> T:
    """Return the probe's first truthy, non-`Pending` result.

    The probe may also raise `TransientError` (the thing is not reachable yet):
    that counts as "not yet" and its message is reported. Any other exception
    ends the wait. `deadline` is absolute (on `clock`), `timeout` relative; the
    earlier wins. Raises `DeadlineExceeded` or `Interrupted`.
    """
    start = clock()
    ends = [d for d in (deadline, start + timeout if timeout is not None else None) if d is not None]
    end = min(ends) if ends else None
    delay = interval
    probes = 0
    detail: str | None = None

    def pause(seconds: float) -> None:
        if sleep is not None:
            sleep(seconds)
        elif cancel is not None:
            cancel.wait(seconds)
        else:
            time.sleep(seconds)

    while True:
        if cancel is not None and cancel.is_set():
            raise errors.Interrupted(f"stopped while waiting for {what}")
        probes += 1
        try:
            result = probe()
        except errors.TransientError as exc:
            detail = str(exc)
        else:
            if isinstance(result, Pending):
                detail = result.detail
            elif result is not None and result is not False:
                return result
            else:
                detail = None
        now = clock()
        if progress is not None:
            progress(Progress(what, now - start, probes, None if end is None else max(0.0, end - now), detail))
        if end is not None and now >= end:
            seen = f"; last seen: {detail}" if detail else ""
            raise errors.DeadlineExceeded(
                f"timed out after {now - start:.0f}s waiting for {what}{seen}",
                runbook=runbook,
            )
        step = delay if end is None else min(delay, max(0.0, end - now))
        pause(step)
        delay = min(delay * backoff, max_interval)
