"""The project's error tree: what went wrong, what to do, which runbook to read.

Every failure a user can see is a `DRError`. Adapters translate third-party
exceptions into it (always ``raise ... from exc``), the engine decides from the
type whether to retry, and only the CLI turns it into an exit code::

    DRError                      exit 1   base: message + hint + runbook
    ├── TransientError           exit 1   worth retrying (API 5xx/429, elections, timeouts)
    ├── PermanentError           exit 1   retrying cannot help; stop and explain
    │   ├── NotImplementedYet    exit 1   a step body that does not exist yet
    │   ├── VerificationError    exit 1   a step ran but its end state is not proven
    │   ├── DeadlineExceeded     exit 1   a wait or a step ran out of time
    │   ├── CheckpointError      exit 1   a checkpoint cannot be read or written
    │   ├── SnapshotError        exit 1   a snapshot is incomplete, corrupt or not a Raft snapshot
    │   ├── SealConfigStale      exit 1   a Vault node caches the seal config of before a restore
    │   ├── ObjectLocked         exit 1   a stored object under Object Lock retention cannot be deleted yet
    │   ├── AlreadyExists        exit 1   a write that must create an object found one there (a second writer)
    │   └── PlanError            exit 1   a plan that cannot run (cycle, unknown step)
    ├── ConfigError              exit 2   bad configuration, flags or input
    ├── LockHeldError            exit 3   another run holds the state dir
    └── Interrupted              exit 130 stopped by SIGINT/SIGTERM at a safe point

Messages must never contain secret values: `DRError.__str__` passes the
text through the redaction registry as a last line of defence, but callers
should not put secrets there in the first place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from dr import secret

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 3
EXIT_INTERRUPTED = 130

RUNBOOK_INDEX = "runbooks/README.md"


class DRError(Exception):
    """A failure the user sees: a one-line message, a hint and a runbook."""

    exit_code: ClassVar[int] = EXIT_FAILED
    default_hint: ClassVar[str] = "read the runbook, fix the cause, then run the command again"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        runbook: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint
        self.runbook = runbook or RUNBOOK_INDEX

    def __str__(self) -> str:
        return secret.redact_text(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in checkpoints and reports (redacted)."""
        return {
            "type": type(self).__name__,
            "message": secret.redact_text(self.message),
            "hint": secret.redact_text(self.hint),
            "runbook": self.runbook,
            "exit_code": self.exit_code,
        }


class TransientError(DRError):
    """Worth retrying: the same call may succeed in a moment."""

    default_hint = "this is usually temporary; dr retries it, and a resumed run continues"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        runbook: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, hint=hint, runbook=runbook)
        self.retry_after = retry_after


class PermanentError(DRError):
    """Retrying cannot help; a person has to act."""


class NotImplementedYet(PermanentError):
    """The step exists in the plan but its body is still to be built."""

    default_hint = "finish this step by hand with its runbook, then resume the run"


class VerificationError(PermanentError):
    """The step ran but its end state could not be proven; carries the evidence."""

    def __init__(
        self,
        message: str,
        *,
        evidence: dict[str, Any] | None = None,
        hint: str | None = None,
        runbook: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, runbook=runbook)
        self.evidence = evidence or {}

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["evidence"] = secret.redact_value(self.evidence)
        return data


class DeadlineExceeded(PermanentError):
    """A wait or a step ran out of its time budget."""

    default_hint = "check what the step was waiting for (see the runbook), then resume the run"


class CheckpointError(PermanentError):
    """A checkpoint cannot be read or written."""

    default_hint = "check the state dir's disk space and permissions; the last good checkpoint is kept"


class SnapshotError(PermanentError):
    """A snapshot that must not be trusted: incomplete, corrupt, or not a Raft snapshot."""

    default_hint = "do not restore it; take a new snapshot or choose an older verified one"


class SealConfigStale(PermanentError):
    """A restored Vault node still has the pre-restore seal configuration: restart it, then unseal."""


class ObjectLocked(PermanentError):
    """An object the store's Object Lock retains: deleting it must wait until `until`."""

    def __init__(self, message: str, *, until: datetime, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.until = until


class AlreadyExists(PermanentError):
    """A create-only write (a manifest) found the key taken: another writer got there first."""


class PlanError(PermanentError):
    """A plan whose steps cannot be ordered: a cycle, a duplicate or unknown name."""

    default_hint = "this is a bug in how the plan is declared; report it with this message"


class ConfigError(DRError):
    """Bad configuration, flags or input: nothing was changed."""

    exit_code = EXIT_CONFIG
    default_hint = "fix the value named above and run the command again"


class LockHeldError(DRError):
    """Another run holds the state dir's lock."""

    exit_code = EXIT_LOCKED
    default_hint = (
        "wait for that run to finish, or follow it with `dr status`; "
        "if its process is gone the lock is released automatically"
    )


class Interrupted(DRError):
    """Stopped by a signal at a safe point; the checkpoint is resumable."""

    exit_code = EXIT_INTERRUPTED
    default_hint = "resume with `dr recover --resume RUN_ID`"
