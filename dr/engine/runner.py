"""The runner: drives a plan's steps, checkpointing every transition, resumable after any crash.

It holds the state-dir lock for the whole run, starts each step once its
requirements are done (independent branches in parallel threads), retries
`TransientError`s by the step's policy, and writes the run record after
every transition. A step found `running`, `interrupted` or `failed` in a
resumed run is re-entered through `check()`, so work finished before a crash
is never redone. SIGINT/SIGTERM ask every wait to stop at a safe point; a
second signal exits at once (the checkpoint is already durable).

The runner never raises for a step's failure: it returns an `Outcome`, and
only the CLI turns that into an exit code.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import tenacity

from dr import __version__, errors, logs, waiting
from dr.engine import checkpoints, locks
from dr.engine import plan as plan_mod
from dr.engine import step as step_mod

log = logs.get("dr.engine")


@dataclass(frozen=True)
class Outcome:
    """How a run ended: its id, status, the steps that failed and the first error."""

    run_id: str
    status: checkpoints.RunStatus
    failed_steps: tuple[str, ...]
    error: errors.DRError | None

    @property
    def exit_code(self) -> int:
        if self.status == "succeeded":
            return errors.EXIT_OK
        return self.error.exit_code if self.error is not None else errors.EXIT_FAILED


class Observer(Protocol):
    """What a live display is told of a run as it happens; called from the steps' threads.

    The run record and the log stay the truth: an observer only shows, and one that raises is ignored.
    """

    def step_started(self, step: str) -> None: ...

    def step_waiting(self, step: str, tick: waiting.Progress) -> None: ...

    def step_ended(self, step: str, state: str, seconds: float) -> None: ...


class _Quiet:
    """The observer of a run nobody watches."""

    def step_started(self, step: str) -> None:
        pass

    def step_waiting(self, step: str, tick: waiting.Progress) -> None:
        pass

    def step_ended(self, step: str, state: str, seconds: float) -> None:
        pass


def _shown(call: Callable[..., None], *args: Any) -> None:
    try:
        call(*args)
    except Exception:  # a display that breaks must not take the run with it
        log.debug("observer_failed", exc_info=True)


def operator_identity() -> str:
    """``user@host`` of whoever started the run, for the record and the lock."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class _StopAtDeadline(tenacity.stop.stop_base):
    """Stop retrying once the step's absolute deadline has passed."""

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self.deadline = deadline
        self.clock = clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.clock() >= self.deadline


class Runner:
    """Runs one plan against one state dir."""

    def __init__(
        self,
        plan: plan_mod.Plan,
        store: checkpoints.CheckpointStore,
        *,
        config: Any = None,
        max_parallel: int = 4,
        handle_signals: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
        observer: Observer | None = None,
    ) -> None:
        self.plan = plan
        self.observer: Observer = observer or _Quiet()
        self.store = store
        self.config = config
        self.max_parallel = max(1, max_parallel)
        self.handle_signals = handle_signals
        self._mono = monotonic
        self._stop = threading.Event()
        self._mutex = threading.RLock()
        self._errors: dict[str, errors.DRError] = {}
        self._held: dict[str, Any] = {}
        self._resources = contextlib.ExitStack()

    # -- public surface -------------------------------------------------------------

    def start(self, params: Mapping[str, Any] | None = None) -> Outcome:
        """Start a new run of the plan."""
        now = checkpoints.timestamp(checkpoints.utcnow())
        run = checkpoints.RunRecord(
            run_id=checkpoints.new_run_id(),
            plan=self.plan.name,
            created_at=now,
            updated_at=now,
            operator=operator_identity(),
            tool_version=__version__,
            params=dict(params or {}),
            steps={s.name: checkpoints.StepRecord(name=s.name) for s in self.plan},
        )
        with self._locked(run):
            self._save(run)
            return self._execute(run)

    def resume(
        self, run_id: str, params: Mapping[str, Any] | None = None, *, amend: Mapping[str, Any] | None = None
    ) -> Outcome:
        """Continue a run from its checkpoint; `params` given must match the recorded ones.

        `amend` are parameters a resume may change (an operator's answer to a refusal, like --force);
        they are recorded in the run.
        """
        run = self.store.load(run_id)
        if run.plan != self.plan.name:
            raise errors.ConfigError(
                f"run {run_id} is a {run.plan!r} run, not {self.plan.name!r}",
                hint=f"resume it with the command that started it (`dr {run.plan} --resume {run_id}`)",
            )
        for key, value in (params or {}).items():
            if value is not None and key in run.params and run.params[key] != value:
                raise errors.ConfigError(
                    f"run {run_id} was started with {key}={run.params[key]!r}, not {value!r}",
                    hint="resume without that option, or start a new run",
                )
        with self._locked(run):
            run = self.store.load(run_id)  # re-read under the lock: the last holder may have written
            for key, value in (amend or {}).items():
                if run.params.get(key) != value:
                    was = run.params.get(key)
                    log.warning("run_parameter_changed", run_id=run_id, parameter=key, was=was, now=value)
                    run.params[key] = value
            for s in self.plan:
                run.steps.setdefault(s.name, checkpoints.StepRecord(name=s.name))
            if run.status == "succeeded":
                log.info("run_already_succeeded", run_id=run_id)
                return Outcome(run_id, "succeeded", (), None)
            run.status, run.ended_at, run.error = "running", None, None
            self._save(run)
            return self._execute(run)

    def request_stop(self) -> None:
        """Ask the run to stop at the next safe point (what SIGINT/SIGTERM do)."""
        self._stop.set()

    # -- run loop ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, run: checkpoints.RunRecord) -> Iterator[None]:
        lock = locks.StateLock(self.store.state_dir)
        lock.acquire(
            {
                "run_id": run.run_id,
                "pid": os.getpid(),
                "operator": operator_identity(),
                "started_at": checkpoints.timestamp(checkpoints.utcnow()),
                "plan": run.plan,
            }
        )
        try:
            self._remove_stale_tmp(run.run_id)
            with self._signals():
                yield
        finally:
            lock.release()

    def _remove_stale_tmp(self, run_id: str) -> None:
        # A SIGKILL between write and rename leaves a hidden tmp file, and one before
        # a run's first rename leaves a run dir with no checkpoint. Under the lock
        # nobody else can be writing, so both are garbage.
        for run_dir in self.store.runs_dir.iterdir():
            if run_dir.name != run_id and (run_dir / checkpoints.FILENAME).exists():
                continue
            for tmp in run_dir.glob(f".{checkpoints.FILENAME}.*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()
            if run_dir.name != run_id:
                with contextlib.suppress(OSError):
                    run_dir.rmdir()  # only if empty: never remove anything else

    def _execute(self, run: checkpoints.RunRecord) -> Outcome:
        started = self._mono()
        log.info("run_started", run_id=run.run_id, plan=run.plan, steps=list(self.plan.order))
        launched: set[str] = set()
        failed = False
        # Run resources are left after the last step, before the record says how the run ended.
        with self._resources, futures.ThreadPoolExecutor(self.max_parallel, thread_name_prefix="dr-step") as pool:
            running: dict[futures.Future[None], str] = {}
            while True:
                if not failed and not self._stop.is_set():
                    for s in self.plan:
                        if len(running) >= self.max_parallel:
                            break
                        if s.name in launched or run.steps[s.name].done:
                            continue
                        if all(run.steps[d].done for d in s.requires):
                            launched.add(s.name)
                            running[pool.submit(self._drive, run, s)] = s.name
                if not running:
                    break
                # A short timeout keeps the main thread responsive to signals.
                done, _ = futures.wait(running, timeout=0.2, return_when=futures.FIRST_COMPLETED)
                for fut in done:
                    name = running.pop(fut)
                    fut.result()
                    if not run.steps[name].done:
                        failed = True
        return self._finish(run, self._mono() - started)

    def _hold(self, key: str, enter: Callable[[], contextlib.AbstractContextManager[Any]]) -> Any:
        with self._mutex:
            if key not in self._held:
                self._held[key] = self._resources.enter_context(enter())
            return self._held[key]

    def _finish(self, run: checkpoints.RunRecord, elapsed: float) -> Outcome:
        with self._mutex:
            self._held.clear()  # left with the `with` in _execute
            blocked_by = [n for n in self.plan.order if run.steps[n].state in ("failed", "interrupted")]
            for name in self.plan.order:
                rec = run.steps[name]
                if rec.state == "pending" and blocked_by:
                    rec.note = f"not started: waits for {', '.join(blocked_by)}"
            if all(r.done for r in run.steps.values()):
                status: checkpoints.RunStatus = "succeeded"
                error: errors.DRError | None = None
            elif self._stop.is_set() and not self._errors:
                status = "stopped"
                error = errors.Interrupted(
                    f"run {run.run_id} stopped at a safe point",
                    hint=f"resume with `dr {run.plan} --resume {run.run_id}`",
                )
            else:
                status = "failed"
                # The failure of the earliest step in plan order: parallel branches fail in any order.
                first = next((n for n in self.plan.order if n in self._errors), None)
                error = (self._errors[first] if first else None) or errors.PermanentError(
                    f"run {run.run_id} did not finish"
                )
            run.status = status
            run.error = None if error is None else error.to_dict()
            run.ended_at = checkpoints.timestamp(checkpoints.utcnow())
            self._save(run)
        log.info("run_finished", run_id=run.run_id, status=status, elapsed=round(elapsed, 2))
        failed_steps = tuple(n for n in self.plan.order if run.steps[n].state == "failed")
        return Outcome(run.run_id, status, failed_steps, error)

    # -- one step --------------------------------------------------------------------

    def _drive(self, run: checkpoints.RunRecord, s: step_mod.Step) -> None:
        """Take one step to done, failed or interrupted. Never raises."""
        began = self._mono()
        with self._mutex:
            rec = run.steps[s.name]
            rec.resumed = rec.state in ("running", "interrupted", "failed") or rec.resumed
            rec.state = "running"
            rec.started_at = rec.started_at or checkpoints.timestamp(checkpoints.utcnow())
            rec.ended_at, rec.error, rec.note = None, None, None
            self._save(run)
        position = f"{self.plan.order.index(s.name) + 1}/{len(self.plan)}"
        slog = log.bind(run_id=run.run_id, step=s.name)
        slog.info("step_started", position=position, resumed=rec.resumed)
        _shown(self.observer.step_started, s.name)
        deadline = began + s.timeout
        ctx = self._context(run, s, deadline)
        try:
            outcome = self._attempts(run, s, ctx, deadline)
        except errors.Interrupted as exc:
            self._end(run, s.name, "interrupted", began, note=str(exc))
            slog.warning("step_interrupted", reason=str(exc))
        except errors.DRError as exc:
            self._fail(run, s, began, exc, slog)
        except Exception as exc:  # a bug in a step must not take the run record with it
            slog.exception("step_crashed")
            wrapped = errors.PermanentError(
                f"internal error in step {s.name}: {type(exc).__name__}: {exc}",
                hint="this is a bug in dr: report it with the log above; the run is resumable",
                runbook=s.runbook,
            )
            self._fail(run, s, began, wrapped, slog)
        else:
            note = "end state already held; nothing to do" if outcome == "skipped" else None
            self._end(run, s.name, outcome, began, note=note)
            slog.info(f"step_{outcome}", duration=round(self._mono() - began, 2), resumed=rec.resumed)

    def _fail(self, run: checkpoints.RunRecord, s: step_mod.Step, began: float, exc: errors.DRError, slog: Any) -> None:
        if exc.runbook == errors.RUNBOOK_INDEX:
            exc.runbook = s.runbook
        detail = exc.to_dict()
        attempts = len(run.steps[s.name].attempts)
        if isinstance(exc, errors.TransientError):
            detail["message"] += f" (gave up after {attempts} attempt(s))"
        self._errors.setdefault(s.name, exc)
        self._end(run, s.name, "failed", began, error=detail)
        slog.error("step_failed", error=detail["message"], hint=detail["hint"], runbook=detail["runbook"])

    def _end(
        self,
        run: checkpoints.RunRecord,
        name: str,
        state: checkpoints.StepState,
        began: float,
        *,
        note: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        with self._mutex:
            rec = run.steps[name]
            rec.state = state
            rec.ended_at = checkpoints.timestamp(checkpoints.utcnow())
            rec.duration_s = round(rec.duration_s + (self._mono() - began), 6)
            rec.note, rec.error = note, error
            self._save(run)
        _shown(self.observer.step_ended, name, state, self._mono() - began)

    def _context(self, run: checkpoints.RunRecord, s: step_mod.Step, deadline: float) -> step_mod.StepContext:
        def on_output(key: str, value: Any) -> None:
            with self._mutex:
                run.steps[s.name].outputs[key] = value
                self._save(run)

        def on_wait(seconds: float) -> None:
            with self._mutex:
                run.steps[s.name].wait_s = round(run.steps[s.name].wait_s + seconds, 6)

        return step_mod.StepContext(
            run_id=run.run_id,
            step=s.name,
            run_dir=self.store.run_dir(run.run_id),
            params=dict(run.params),
            config=self.config,
            outputs={name: rec.outputs for name, rec in run.steps.items()},
            deadline=deadline,
            stop=self._stop,
            on_output=on_output,
            on_wait=on_wait,
            clock=self._mono,
            hold=self._hold,
            plan=run.plan,
            on_progress=lambda tick: _shown(self.observer.step_waiting, s.name, tick),
        )

    def _attempts(
        self, run: checkpoints.RunRecord, s: step_mod.Step, ctx: step_mod.StepContext, deadline: float
    ) -> checkpoints.StepState:
        policy = s.retry
        backoff = tenacity.wait_exponential(
            multiplier=policy.initial_delay, exp_base=policy.multiplier, max=policy.max_delay
        ) + tenacity.wait_random(0, policy.jitter)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            after = getattr(exc, "retry_after", None) or 0.0
            return max(0.0, min(max(backoff(state), after), deadline - self._mono()))

        def before_sleep(state: tenacity.RetryCallState) -> None:
            delay = state.next_action.sleep if state.next_action else 0.0
            exc = state.outcome.exception() if state.outcome else None
            with self._mutex:
                rec = run.steps[s.name]
                rec.retry_wait_s = round(rec.retry_wait_s + delay, 6)
                if rec.attempts:
                    rec.attempts[-1].retry_wait_s = round(delay, 6)
                self._save(run)
            log.warning(
                "step_retrying",
                run_id=run.run_id,
                step=s.name,
                attempt=state.attempt_number,
                of=policy.attempts,
                delay=round(delay, 2),
                error=str(exc),
            )

        def sleep(seconds: float) -> None:
            if self._stop.wait(seconds):
                raise errors.Interrupted(f"stopped while waiting to retry step {s.name}")

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(policy.attempts) | _StopAtDeadline(deadline, self._mono),
            wait=wait,
            retry=tenacity.retry_if_exception_type(policy.retry_on),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        outcome: checkpoints.StepState = "failed"
        for attempt in retrying:
            with attempt:
                outcome = self._attempt(run, s, ctx)
        return outcome

    def _attempt(
        self, run: checkpoints.RunRecord, s: step_mod.Step, ctx: step_mod.StepContext
    ) -> checkpoints.StepState:
        """One pass: check → (run) → verify. Each stage is recorded before it starts."""
        with self._mutex:
            rec = run.steps[s.name]
            attempt = checkpoints.Attempt(
                number=len(rec.attempts) + 1, started_at=checkpoints.timestamp(checkpoints.utcnow())
            )
            rec.attempts.append(attempt)
            self._save(run)
        try:
            ctx.check_stop()
            if s.check(ctx):
                outcome: checkpoints.StepState = "skipped" if rec.runs == 0 else "succeeded"
            else:
                with self._mutex:
                    # Counted before the body starts, so a crash inside it is known on resume.
                    rec.runs += 1
                    attempt.ran = True
                    self._save(run)
                s.run(ctx)
                outcome = "succeeded"
            s.verify(ctx)
        except BaseException as exc:
            with self._mutex:
                attempt.ended_at = checkpoints.timestamp(checkpoints.utcnow())
                attempt.outcome = "interrupted" if isinstance(exc, errors.Interrupted) else "error"
                attempt.error = (
                    exc.to_dict()
                    if isinstance(exc, errors.DRError)
                    else {"type": type(exc).__name__, "message": str(exc)}
                )
                self._save(run)
            raise
        with self._mutex:
            attempt.ended_at = checkpoints.timestamp(checkpoints.utcnow())
            attempt.outcome = outcome
            self._save(run)
        return outcome

    def _save(self, run: checkpoints.RunRecord) -> None:
        with self._mutex:
            run.updated_at = checkpoints.timestamp(checkpoints.utcnow())
            self.store.save(run)

    # -- signals ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._stop.is_set():
                log.error("stop_forced", signal=name)
                os._exit(errors.EXIT_INTERRUPTED)
            self._stop.set()
            log.warning(
                "stop_requested",
                signal=name,
                hint="finishing at a safe point; the run stays resumable. Signal again to stop at once",
            )

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
