"""Steps: the unit of recovery, with a cheap "already done?" check, a body and a proof.

A step is written so that the runner may call it again after a crash at any
line: `check` says whether the end state already holds (side-effect free, so
a resumed or repeated run skips finished work), `run` makes it hold, and
`verify` proves it with evidence. The retry policy and timeout belong to the
step because only the step knows what is worth retrying and how long its
platform takes; configuration may override both.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from dr import errors, logs, secret, waiting

T = TypeVar("T")

# Log a wait at 5 s, 15 s, 30 s and then every 30 s: live enough at 3 a.m.,
# quiet enough for a CronJob's log.
PROGRESS_MARKS = (5.0, 15.0, 30.0)
PROGRESS_EVERY = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """How a step retries `TransientError`s: attempts and exponential backoff with jitter."""

    attempts: int = 3
    initial_delay: float = 1.0
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    retry_on: tuple[type[BaseException], ...] = (errors.TransientError,)


class StepContext:
    """What a step sees of its run: identity, config, outputs, its deadline, the stop flag."""

    def __init__(
        self,
        *,
        run_id: str,
        step: str,
        run_dir: Path,
        params: Mapping[str, Any],
        config: Any,
        outputs: Mapping[str, Mapping[str, Any]],
        deadline: float,
        stop: threading.Event,
        on_output: Callable[[str, Any], None],
        on_wait: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
        hold: Callable[[str, Callable[[], contextlib.AbstractContextManager[Any]]], Any] | None = None,
        plan: str = "",
        on_progress: Callable[[waiting.Progress], None] | None = None,
    ) -> None:
        self.run_id = run_id
        self.plan = plan
        self.step = step
        self.run_dir = run_dir
        self.params = params
        self.config = config
        self.deadline = deadline
        self.stop = stop
        self.log = logs.get("dr.step").bind(run_id=run_id, step=step)
        self._outputs = outputs
        self._on_output = on_output
        self._on_wait = on_wait
        self._clock = clock
        self._hold = hold
        self._on_progress = on_progress

    def output(self, step: str, key: str) -> Any:
        """A value an earlier step recorded (kept in the checkpoint, so it survives a resume)."""
        try:
            return self._outputs[step][key]
        except KeyError:
            raise errors.PermanentError(
                f"step {self.step!r} needs output {key!r} of step {step!r}, which has not recorded it",
                hint="resume the run so that the earlier step runs again",
            ) from None

    def outputs_of(self, step: str) -> Mapping[str, Any]:
        return self._outputs.get(step, {})

    def set_output(self, key: str, value: Any) -> None:
        """Record a non-secret value for later steps and resumed runs; saved at once."""
        if secret.is_secret_key(key):
            raise ValueError(f"output {key!r} looks secret; outputs are written to the checkpoint")
        try:
            text = json.dumps(value)
        except TypeError as exc:  # a Secret is not JSON-serialisable: by design
            raise ValueError(f"output {key!r} is not plain JSON data: {exc}") from exc
        if secret.redact_text(text) != text:
            raise ValueError(f"output {key!r} contains a registered secret value")
        self._on_output(key, value)

    def hold(self, key: str, enter: Callable[[], contextlib.AbstractContextManager[T]]) -> T:
        """A resource held for the rest of the run (a lease, a tunnel): entered once, left when the run ends.

        The first step to ask enters `enter()`; later asks, from any step, get the same value.
        """
        if self._hold is None:
            raise errors.PermanentError(f"step {self.step}: this context cannot hold run resources")
        return self._hold(key, enter)  # type: ignore[no-any-return]

    def remaining(self) -> float:
        return max(0.0, self.deadline - self._clock())

    def check_stop(self) -> None:
        """Raise `Interrupted` if a stop was asked: call between long non-waiting actions."""
        if self.stop.is_set():
            raise errors.Interrupted(f"stopped during step {self.step}")

    @contextlib.contextmanager
    def platform_wait(self) -> Iterator[None]:
        """Count the block as time spent waiting on the platform: an adapter's own wait (Vault settling)."""
        started = self._clock()
        try:
            yield
        finally:
            self._on_wait(self._clock() - started)

    def wait_until(
        self,
        probe: Callable[[], T | waiting.Pending | None],
        *,
        what: str,
        timeout: float | None = None,
        interval: float = 0.5,
        max_interval: float = 5.0,
        sleep: Callable[[float], None] | None = None,
    ) -> T:
        """`waiting.wait_until` bound to this step's deadline, stop flag, log and timeline.

        `sleep` replaces the pause between probes (a watch that returns early on a change).
        """
        marks = list(PROGRESS_MARKS)

        def report(tick: waiting.Progress) -> None:
            if self._on_progress is not None:
                self._on_progress(tick)  # every probe: a live display shows the last state seen
            while marks and tick.elapsed >= marks[0]:
                marks.pop(0)
                if not marks:
                    marks.append(tick.elapsed + PROGRESS_EVERY)
                self.log.info(
                    "waiting",
                    what=tick.what,
                    elapsed=round(tick.elapsed, 1),
                    remaining=None if tick.remaining is None else round(tick.remaining),
                    detail=tick.detail,
                )

        with self.platform_wait():
            return waiting.wait_until(
                probe,
                what=what,
                timeout=timeout,
                deadline=self.deadline,
                interval=interval,
                max_interval=max_interval,
                progress=report,
                cancel=self.stop,
                clock=self._clock,
                sleep=sleep,
                runbook=f"runbooks/{self.step}.md",
            )


class Step:
    """Base class of plan steps. Subclasses set the class attributes and the three operations."""

    name: str = ""
    requires: tuple[str, ...] = ()
    summary: ClassVar[str] = ""
    end_state: ClassVar[str] = ""
    default_timeout: ClassVar[float] = 600.0
    default_retry: ClassVar[RetryPolicy] = RetryPolicy()

    def __init__(
        self,
        *,
        name: str | None = None,
        requires: tuple[str, ...] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        # Instance values let one class serve several steps (tests, per-config overrides).
        self.name = name or type(self).name
        self.requires = tuple(requires) if requires is not None else type(self).requires
        self.timeout = timeout if timeout is not None else type(self).default_timeout
        self.retry = retry or type(self).default_retry
        if not self.name:
            raise ValueError(f"{type(self).__name__} has no name")

    @property
    def runbook(self) -> str:
        return f"runbooks/{self.name}.md"

    def check(self, ctx: StepContext) -> bool:
        """Is the end state already true? Cheap, and no side effect on the platform.

        When it is true, record the outputs later steps need (`ctx.set_output`):
        a crash after `run` made the change but before it saved its outputs
        leaves them to be rediscovered here.
        """
        raise errors.NotImplementedYet(f"step {self.name}: check is not implemented yet", runbook=self.runbook)

    def run(self, ctx: StepContext) -> None:
        """Make the end state true; safe to repeat after a crash at any line."""
        raise errors.NotImplementedYet(f"step {self.name}: run is not implemented yet", runbook=self.runbook)

    def verify(self, ctx: StepContext) -> None:
        """Prove the end state; raise `VerificationError` with evidence. Default: `check` again."""
        if not self.check(ctx):
            raise errors.VerificationError(
                f"step {self.name} ran but its end state does not hold: {self.end_state or self.summary}",
                runbook=self.runbook,
            )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requires": list(self.requires),
            "summary": self.summary,
            "end_state": self.end_state,
            "timeout_s": self.timeout,
            "attempts": self.retry.attempts,
            "runbook": self.runbook,
        }
