"""Run history: every report in one SQLite file in the state dir, for trends, percentiles and the regression gate.

SQLite because the history must survive the runs and be queried by run id
and by time without a server, and because one file is easy to copy into a
CI artefact. Each row is a report as written (`report.json`), plus the
columns that lists and trends sort and filter on. A report written again
(a resumed recovery) replaces its row.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from dr import errors, logs

FILENAME: Final = "history.sqlite"
log = logs.get("dr.reports")
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS reports (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    scenario TEXT,
    provider TEXT,
    verdict TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT,
    rto_s REAL,
    rpo_s REAL,
    report TEXT NOT NULL
)
"""


class History:
    """The reports of one state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILENAME

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        fresh = not self.path.exists()
        try:
            if fresh:  # the history holds run details: owner-only, like the checkpoints
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            db = sqlite3.connect(self.path, timeout=10)
        except (OSError, sqlite3.Error) as exc:
            raise errors.ConfigError(f"cannot open the run history {self.path}: {exc}") from exc
        try:
            with db:
                db.execute(_SCHEMA)
                yield db
        except sqlite3.DatabaseError as exc:
            raise errors.ConfigError(
                f"the run history {self.path} is unreadable: {exc}",
                hint="move the file away; reports are also in each run's report.json",
            ) from exc
        finally:
            db.close()

    def add(self, report: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO reports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    report["id"],
                    report["type"],
                    report.get("scenario"),
                    report.get("provider"),
                    report["verdict"],
                    report.get("started_at"),
                    report.get("ended_at"),
                    report["rto"]["seconds"],
                    report["rpo"]["seconds"],
                    json.dumps(report),
                ),
            )

    def get(self, report_id: str | None = None) -> dict[str, Any]:
        """One report by id, or the latest one."""
        if not self.path.exists():
            raise errors.ConfigError(
                f"no run history at {self.path}",
                hint="run `dr drill` or `dr recover` first, or pass the state dir of earlier runs with --state-dir",
            )
        with self._db() as db:
            if report_id:
                row = db.execute("SELECT report FROM reports WHERE id = ?", (report_id,)).fetchone()
            else:
                row = db.execute("SELECT report FROM reports ORDER BY started_at DESC LIMIT 1").fetchone()
        if row is None:
            raise errors.ConfigError(
                f"no report {report_id!r} in {self.path}" if report_id else f"no reports in {self.path}",
                hint="list them with `dr report history`",
            )
        return json.loads(row[0])  # type: ignore[no-any-return]

    def reports(self, *, last: int | None = None, type_: str | None = None) -> list[dict[str, Any]]:
        """Reports oldest first (the latest `last` of them)."""
        if not self.path.exists():
            return []
        query = "SELECT report FROM reports WHERE ? IS NULL OR type = ? ORDER BY started_at DESC LIMIT ?"
        with self._db() as db:
            rows = db.execute(query, (type_, type_, -1 if last is None else last)).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]


def remember(state_dir: Path, report: dict[str, Any], *, type_: str | None = None) -> list[dict[str, Any]]:
    """Add `report` to the history; returns the history's latest reports (of `type_`), this one last.

    A history that cannot be written must not hide the result of a recovery that just finished: the report is
    still printed and written to files, and the problem is logged.
    """
    past = History(state_dir)
    try:
        past.add(report)
        earlier = past.reports(last=30, type_=type_)
    except errors.DRError as exc:
        log.warning("report_history_not_written", path=str(past.path), error=exc.message, hint=exc.hint)
        earlier = []
    return [r for r in earlier if r["id"] != report["id"]] + [report]
