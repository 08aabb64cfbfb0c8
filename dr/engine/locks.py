"""The state-dir lock: one run at a time drives a state dir.

Two operators resuming the same recovery from two terminals would race each
other's checkpoints and, worse, each other's unseal and restore calls. An
advisory `flock` on ``<state-dir>/lock`` is released by the kernel when the
holder dies, even by SIGKILL, so a crashed run never leaves a stale lock to
clean up by hand. The file's content names the holder (run id, pid,
operator, start time) so that the second operator is told who to talk to.
(Cross-machine safety needs a lock in the target cluster: a Kubernetes
Lease, taken by the recovery once a cluster exists.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from dr import errors

FILENAME = "lock"


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another dr process (it is still starting)"
    return (
        f"run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')}, "
        f"{holder.get('operator', '?')}) holds the lock since {holder.get('started_at', '?')}"
    )


class StateLock:
    """An exclusive, crash-safe lock on a state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILENAME
        self._fd: int | None = None

    def acquire(self, holder: dict[str, Any]) -> None:
        """Take the lock for `holder` or raise `LockHeldError` naming the current holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            current = self.holder()
            raise errors.LockHeldError(
                f"state dir {self.path.parent} is in use: {_describe(current)}",
                hint=(
                    "follow that run with `dr status"
                    + (f" {current['run_id']}`" if current and "run_id" in current else "`")
                    + "; wait for it to end, or stop it with Ctrl-C in its terminal and resume it"
                ),
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the flock

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now, or None when nobody does."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raw = os.pread(fd, 65536, 0)
                try:
                    data = json.loads(raw) if raw else {}
                except ValueError:
                    data = {}
                return data if isinstance(data, dict) else {}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
