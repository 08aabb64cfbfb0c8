"""Live progress on a terminal: one line per running step, with its elapsed time, what it waits for and the
last state seen, redrawn in place while the run goes on.

A recovery spends most of its time waiting on the platform (nodes, Argo CD, Vault, ESO); at 3 a.m. a person
wants to see that it is alive and what it is waiting for, not a log line every 30 s. This is only the view:
the run record and the structured log stay the truth, and a non-terminal or `--log-format json` gets the log
alone. rich does the cursor work; the log lines print above the live lines through it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dr import logs, views, waiting

if TYPE_CHECKING:
    from dr.engine import runner

SHOWN = frozenset({"waiting", "step_started", "step_succeeded", "step_skipped"})
MARKS = {"succeeded": "✓", "skipped": "✓", "failed": "✗", "interrupted": "■"}


@dataclass
class _Running:
    since: float
    what: str = "checking whether its end state already holds"
    detail: str | None = None


class Board:
    """The runner's observer: what each running step is doing, drawn by rich at every refresh."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    def step_started(self, step: str) -> None:
        with self._lock:
            self._running[step] = _Running(time.monotonic())

    def step_waiting(self, step: str, tick: waiting.Progress) -> None:
        with self._lock:
            if step in self._running:
                self._running[step].what, self._running[step].detail = f"waiting for {tick.what}", tick.detail

    def step_ended(self, step: str, state: str, seconds: float) -> None:
        with self._lock:
            self._running.pop(step, None)
        self.console.print(f"{MARKS.get(state, '·')} {step} {state} in {views.seconds(seconds)}", highlight=False)

    def __rich__(self) -> Any:
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, justify="right")
        grid.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        now = time.monotonic()
        with self._lock:
            rows = sorted(self._running.items(), key=lambda item: item[1].since)
        for step, state in rows:
            said = state.what + (f": {state.detail}" if state.detail else "")
            grid.add_row(Spinner("dots"), step, views.seconds(now - state.since), Text(said, overflow="ellipsis"))
        return grid


class _CurrentStderr:
    """The log's stream while the board is up: whatever sys.stderr is at each write, so that rich, which
    replaces sys.stderr, prints each log line above the live lines instead of through them."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return True


def wanted(log_format: logs.LogFormat, output: str) -> bool:
    """A person at a terminal reading the console log and the text result."""
    return output == "text" and logs.resolve_format(log_format, sys.stderr) == "console"


@contextlib.contextmanager
def live(
    enabled: bool, *, log_format: logs.LogFormat = "auto", verbose: bool = False
) -> Iterator[runner.Observer | None]:
    """The observer to give the run: a live board on stderr when `enabled`, else None."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=True)
    board = Board(console)
    with Live(board, console=console, refresh_per_second=4, transient=True, redirect_stdout=False):
        # What the board shows (waits, starts, successes) is not logged twice; the rest prints above it.
        logs.configure("console", verbose=verbose, stream=_CurrentStderr(), drop=SHOWN)  # type: ignore[arg-type]
        try:
            yield board
        finally:
            logs.configure(log_format, verbose=verbose)
