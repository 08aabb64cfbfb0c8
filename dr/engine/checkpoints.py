"""Checkpoints: the durable record of a run, one JSON file per run, written atomically.

A checkpoint is what makes a recovery resumable after SIGKILL, a lost SSH
session or a reboot: after every step transition the whole run record is
written to ``<state-dir>/runs/<run-id>/checkpoint.json`` through a temporary
file, fsync and rename, so a reader sees either the previous record or the
new one, never a torn file. The record is versioned JSON, mode 0600, and
holds only non-secret data (secrets are redacted again on the way out).
It is also the timeline the reports are built from.
"""

from __future__ import annotations

import dataclasses
import json
import secrets as _random
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from dr import errors, files, secret

SCHEMA_VERSION: Final = 1
KIND: Final = "dr.checkpoint"
FILENAME: Final = "checkpoint.json"

StepState = Literal["pending", "running", "succeeded", "skipped", "failed", "interrupted"]
RunStatus = Literal["running", "succeeded", "failed", "stopped"]

DONE_STATES: Final = frozenset({"succeeded", "skipped"})


def utcnow() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z suffix: sortable, unambiguous at 3 a.m. in any timezone."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by start time and is unique across machines: ``20261201T070102Z-3fa9c1``."""
    moment = (now or utcnow()).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{_random.token_hex(3)}"


@dataclass
class Attempt:
    """One pass through check → run → verify."""

    number: int
    started_at: str
    ended_at: str | None = None
    ran: bool = False
    outcome: str | None = None
    error: dict[str, Any] | None = None
    retry_wait_s: float = 0.0


@dataclass
class StepRecord:
    """Everything known about one step of one run."""

    name: str
    state: StepState = "pending"
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float = 0.0
    wait_s: float = 0.0
    retry_wait_s: float = 0.0
    runs: int = 0
    resumed: bool = False
    note: str | None = None
    error: dict[str, Any] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES


@dataclass
class RunRecord:
    """A run: its identity, parameters, status and per-step records, in plan order."""

    run_id: str
    plan: str
    created_at: str
    updated_at: str
    status: RunStatus = "running"
    operator: str = ""
    tool_version: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, StepRecord] = field(default_factory=dict)
    ended_at: str | None = None
    error: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {"kind": KIND, **data}

    @classmethod
    def from_json(cls, data: Any, *, source: Path) -> RunRecord:
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise errors.CheckpointError(f"{source} is not a dr checkpoint")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise errors.CheckpointError(
                f"{source} has checkpoint schema version {version!r}; this dr reads version {SCHEMA_VERSION}",
                hint="use the dr version that started the run (see `tool_version` in the file)",
            )
        try:
            fields = {k: v for k, v in data.items() if k not in ("kind", "steps")}
            steps = {
                name: StepRecord(
                    **{k: v for k, v in raw.items() if k != "attempts"},
                    attempts=[Attempt(**a) for a in raw.get("attempts", [])],
                )
                for name, raw in data.get("steps", {}).items()
            }
            return cls(**fields, steps=steps)
        except (TypeError, AttributeError) as exc:
            raise errors.CheckpointError(f"{source} has an unexpected layout: {exc}") from exc


def ensure_private_dir(path: Path, *, what: str) -> Path:
    """Create `path` with mode 0700, or refuse an existing one that others can read."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as exc:
        raise errors.ConfigError(
            f"cannot create {what} {path}: {exc.strerror or exc}",
            hint="choose a writable directory with --state-dir or DR_STATE_DIR",
        ) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise errors.ConfigError(f"{what} {path} exists and is not a directory")
    if info.st_mode & 0o077:
        raise errors.ConfigError(
            f"{what} {path} is accessible by other users (mode {stat.S_IMODE(info.st_mode):04o})",
            hint=f"it can hold recovery material: run `chmod 700 {path}` or choose another directory",
        )
    return path


class CheckpointStore:
    """The runs of one state dir: create, save, load and list checkpoints."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = ensure_private_dir(Path(state_dir), what="state dir")
        self.runs_dir = ensure_private_dir(self.state_dir / "runs", what="runs dir")

    def run_dir(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise errors.ConfigError(f"{run_id!r} is not a run id", hint="list run ids with `dr runs`")
        return self.runs_dir / run_id

    def path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / FILENAME

    def save(self, run: RunRecord) -> None:
        run_dir = ensure_private_dir(self.run_dir(run.run_id), what="run dir")
        text = json.dumps(run.to_json(), indent=2, sort_keys=False) + "\n"
        # Last line of defence: nothing registered as secret reaches the disk.
        files.write_atomic(run_dir / FILENAME, secret.redact_text(text).encode(), error=errors.CheckpointError)

    def load(self, run_id: str) -> RunRecord:
        path = self.path(run_id)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise errors.ConfigError(
                f"no run {run_id!r} in state dir {self.state_dir}",
                hint="list run ids with `dr runs`, or pass the run's --state-dir",
            ) from None
        except OSError as exc:
            raise errors.CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise errors.CheckpointError(f"{path} is not valid JSON: {exc}") from exc
        return RunRecord.from_json(data, source=path)

    def run_ids(self) -> list[str]:
        """Run ids newest first (ids sort by start time)."""
        return sorted(
            (p.name for p in self.runs_dir.iterdir() if (p / FILENAME).exists()),
            reverse=True,
        )

    def iter_runs(self) -> Iterator[RunRecord | errors.CheckpointError]:
        """Every run newest first; an unreadable checkpoint is yielded as its error."""
        for run_id in self.run_ids():
            try:
                yield self.load(run_id)
            except errors.CheckpointError as exc:
                yield exc

    def latest(self) -> RunRecord | None:
        ids = self.run_ids()
        return self.load(ids[0]) if ids else None
