"""The runner in-process: skips, retries, failures, parallel branches, resume, stop, timeline."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from dr import errors, secret
from dr.engine import checkpoints, plan, runner, step

FAST = step.RetryPolicy(attempts=3, initial_delay=0.001, max_delay=0.002, jitter=0.0)
Fn = Callable[[step.StepContext], Any]


class FnStep(step.Step):
    """A step built from functions; by default check() reports whether run() already happened."""

    def __init__(
        self,
        name: str,
        *requires: str,
        run: Fn | None = None,
        check: Fn | None = None,
        verify: Fn | None = None,
        timeout: float | None = None,
        retry: step.RetryPolicy = FAST,
    ) -> None:
        super().__init__(name=name, requires=requires, timeout=timeout, retry=retry)
        self.done = False
        self.calls: list[str] = []
        self._run, self._check, self._verify = run, check, verify

    def check(self, ctx: step.StepContext) -> bool:
        self.calls.append("check")
        return bool(self._check(ctx)) if self._check else self.done

    def run(self, ctx: step.StepContext) -> None:
        self.calls.append("run")
        if self._run:
            self._run(ctx)
        self.done = True

    def verify(self, ctx: step.StepContext) -> None:
        self.calls.append("verify")
        if self._verify:
            self._verify(ctx)


def make(tmp_path: Path, *steps: step.Step, **kwargs: Any) -> tuple[runner.Runner, checkpoints.CheckpointStore]:
    store = checkpoints.CheckpointStore(tmp_path / "state")
    return runner.Runner(plan.Plan("toy", list(steps)), store, handle_signals=False, **kwargs), store


def test_run_completes_and_a_second_run_skips_every_step(tmp_path: Path) -> None:
    """A finished plan run again does nothing: every step is skipped by check()."""
    a, b = FnStep("a"), FnStep("b", "a")
    r, store = make(tmp_path, a, b)
    first = r.start()
    assert ("succeeded", 0) == (first.status, first.exit_code)
    second = r.start()
    assert first.run_id != second.run_id
    rec = store.load(second.run_id)
    assert {"a": "skipped", "b": "skipped"} == {n: s.state for n, s in rec.steps.items()}
    assert ["check", "run", "verify", "check", "verify"] == a.calls
    assert 0 == rec.steps["a"].runs


def test_transient_errors_are_retried_and_recorded(tmp_path: Path) -> None:
    """Two TransientErrors then success: three attempts, retry waits on the timeline, step_retrying logged."""
    fails = iter([errors.TransientError("503 from API", retry_after=0.001), errors.TransientError("503"), None])

    def flaky(_: step.StepContext) -> None:
        exc = next(fails)
        if exc:
            raise exc

    r, store = make(tmp_path, FnStep("a", run=flaky))
    with capture_logs() as logs:
        outcome = r.start()
    assert "succeeded" == outcome.status
    rec = store.load(outcome.run_id).steps["a"]
    assert 3 == len(rec.attempts)
    assert ["error", "error", "succeeded"] == [a.outcome for a in rec.attempts]
    assert rec.retry_wait_s > 0
    assert [1, 2] == [e["attempt"] for e in logs if e["event"] == "step_retrying"]


def test_retry_after_from_the_server_is_honoured(tmp_path: Path) -> None:
    """A TransientError carrying retry_after waits at least that long, even when the back-off is shorter."""
    fails = iter([errors.TransientError("429 Too Many Requests", retry_after=0.3), None])

    def throttled(_: step.StepContext) -> None:
        exc = next(fails)
        if exc:
            raise exc

    r, store = make(tmp_path, FnStep("a", run=throttled))
    rec = store.load(r.start().run_id).steps["a"]
    assert rec.retry_wait_s >= 0.3
    assert rec.attempts[0].retry_wait_s >= 0.3


def test_exhausted_retries_fail_the_step_and_block_dependents(tmp_path: Path) -> None:
    """A step that keeps failing transiently gives up after its attempts; later steps never start."""

    def down(_: step.StepContext) -> None:
        raise errors.TransientError("connection refused")

    b = FnStep("b", "a")
    r, store = make(tmp_path, FnStep("a", run=down), b)
    outcome = r.start()
    assert ("failed", ("a",), 1) == (outcome.status, outcome.failed_steps, outcome.exit_code)
    rec = store.load(outcome.run_id)
    assert "gave up after 3 attempt(s)" in rec.steps["a"].error["message"]  # type: ignore[index]
    assert "runbooks/a.md" == rec.steps["a"].error["runbook"]  # type: ignore[index]
    assert ("pending", "not started: waits for a") == (rec.steps["b"].state, rec.steps["b"].note)
    assert [] == b.calls
    assert "failed" == rec.status


def test_permanent_error_is_not_retried(tmp_path: Path) -> None:
    """PermanentError stops the step at the first attempt."""

    def refuse(_: step.StepContext) -> None:
        raise errors.PermanentError("403 permission denied")

    r, store = make(tmp_path, FnStep("a", run=refuse))
    outcome = r.start()
    assert 1 == len(store.load(outcome.run_id).steps["a"].attempts)
    assert isinstance(outcome.error, errors.PermanentError)


def test_failed_verification_fails_the_step_with_evidence(tmp_path: Path) -> None:
    """verify() raising VerificationError fails the step; the evidence is kept in the checkpoint."""

    def disprove(_: step.StepContext) -> None:
        raise errors.VerificationError("2 of 3 pods sealed", evidence={"sealed": ["vault-1", "vault-2"]})

    r, store = make(tmp_path, FnStep("a", verify=disprove))
    outcome = r.start()
    err = store.load(outcome.run_id).steps["a"].error
    assert err is not None
    assert {"sealed": ["vault-1", "vault-2"]} == err["evidence"]


def test_independent_branches_run_concurrently(tmp_path: Path) -> None:
    """b and c both require only a: they run at the same time (they meet at a barrier)."""
    barrier = threading.Barrier(2, timeout=5)

    def meet(_: step.StepContext) -> None:
        barrier.wait()

    r, _ = make(
        tmp_path,
        FnStep("a"),
        FnStep("b", "a", run=meet),
        FnStep("c", "a", run=meet),
        FnStep("d", "b", "c"),
        max_parallel=2,
    )
    assert "succeeded" == r.start().status


def test_resume_after_a_failure_does_not_redo_finished_steps(tmp_path: Path) -> None:
    """Fix the cause, resume: the failed step is re-entered through check(), finished ones are left alone."""
    broken = {"yes": True}

    def maybe(_: step.StepContext) -> None:
        if broken["yes"]:
            raise errors.PermanentError("missing root-app.yaml")

    a, b = FnStep("a"), FnStep("b", "a", run=maybe)
    r, store = make(tmp_path, a, b)
    failed = r.start()
    assert "failed" == failed.status
    broken["yes"] = False
    resumed = r.resume(failed.run_id)
    assert ("succeeded", failed.run_id) == (resumed.status, resumed.run_id)
    rec = store.load(failed.run_id)
    assert 1 == len(rec.steps["a"].attempts)
    assert (2, True, "succeeded") == (len(rec.steps["b"].attempts), rec.steps["b"].resumed, rec.steps["b"].state)
    assert "succeeded" == r.resume(failed.run_id).status  # resuming a finished run is a no-op


def test_outputs_reach_later_steps_and_survive_in_the_checkpoint(tmp_path: Path) -> None:
    """An output recorded by one step is readable by the next and stored in the checkpoint."""
    seen = {}

    def provide(ctx: step.StepContext) -> None:
        ctx.set_output("kubeconfig", "/state/kubeconfig")

    def consume(ctx: step.StepContext) -> None:
        seen["kubeconfig"] = ctx.output("a", "kubeconfig")

    r, store = make(tmp_path, FnStep("a", run=provide), FnStep("b", "a", run=consume))
    outcome = r.start()
    assert {"kubeconfig": "/state/kubeconfig"} == seen
    assert {"kubeconfig": "/state/kubeconfig"} == store.load(outcome.run_id).steps["a"].outputs


def test_outputs_refuse_secrets(tmp_path: Path) -> None:
    """set_output refuses Secret objects, registered secret values and secret-looking keys."""
    token = secret.Secret("s.very-secret-root-token")
    attempts: list[str] = []

    def leak(ctx: step.StepContext) -> None:
        for key, value in (("token", "x"), ("k", token), ("k", f"Bearer {token.reveal()}")):
            try:
                ctx.set_output(key, value)
            except ValueError as exc:
                attempts.append(str(exc))

    r, store = make(tmp_path, FnStep("a", run=leak))
    outcome = r.start()
    assert 3 == len(attempts)
    assert {} == store.load(outcome.run_id).steps["a"].outputs
    assert token.reveal() not in store.path(outcome.run_id).read_text()


def test_request_stop_interrupts_a_waiting_step(tmp_path: Path) -> None:
    """A stop while a step waits: that step is interrupted, the run is stopped (exit 130), nothing after runs."""
    r: runner.Runner

    def wait_forever(ctx: step.StepContext) -> None:
        threading.Timer(0.05, r.request_stop).start()
        ctx.wait_until(lambda: None, what="a gate that never opens", timeout=30)

    b = FnStep("b", "a")
    r, store = make(tmp_path, FnStep("a", run=wait_forever), b)
    outcome = r.start()
    assert ("stopped", 130) == (outcome.status, outcome.exit_code)
    rec = store.load(outcome.run_id)
    assert ("interrupted", "pending") == (rec.steps["a"].state, rec.steps["b"].state)
    assert rec.steps["a"].wait_s > 0
    assert [] == b.calls


def test_a_bug_in_a_step_is_recorded_not_raised(tmp_path: Path) -> None:
    """An unexpected exception fails the step as an internal error; the runner and checkpoint survive."""

    def bug(_: step.StepContext) -> None:
        raise ZeroDivisionError("division by zero")

    r, store = make(tmp_path, FnStep("a", run=bug))
    with capture_logs():
        outcome = r.start()
    err = store.load(outcome.run_id).steps["a"].error
    assert err is not None
    assert "internal error in step a: ZeroDivisionError" in err["message"]
    assert "failed" == outcome.status


def test_step_timeout_bounds_its_waits(tmp_path: Path) -> None:
    """A step's waits end at the step's timeout with DeadlineExceeded."""

    def wait(ctx: step.StepContext) -> None:
        ctx.wait_until(lambda: None, what="pods", interval=0.01)

    r, store = make(tmp_path, FnStep("a", run=wait, timeout=0.2))
    outcome = r.start()
    assert isinstance(outcome.error, errors.DeadlineExceeded)
    assert "waiting for pods" in str(outcome.error)
    assert "DeadlineExceeded" == store.load(outcome.run_id).steps["a"].error["type"]  # type: ignore[index]


def test_timeline_records_each_transition(tmp_path: Path) -> None:
    """Every step gets UTC start/end, duration and attempts; the run gets an end time."""
    r, store = make(tmp_path, FnStep("a"), FnStep("b", "a"))
    rec = store.load(r.start().run_id)
    a, b = rec.steps["a"], rec.steps["b"]
    assert None not in (a.started_at, a.ended_at, b.started_at, rec.ended_at)
    assert a.started_at.endswith("Z")  # type: ignore[union-attr]
    assert checkpoints.parse_timestamp(a.ended_at) <= checkpoints.parse_timestamp(b.started_at)  # type: ignore[arg-type]
    assert a.duration_s >= 0
    assert [1] == [x.number for x in a.attempts]


def test_resume_with_conflicting_parameters_is_refused(tmp_path: Path) -> None:
    """Resuming with a parameter that differs from the recorded one is a ConfigError (exit 2)."""
    r, _ = make(tmp_path, FnStep("a", run=lambda _: (_ for _ in ()).throw(errors.PermanentError("x"))))
    outcome = r.start({"provider": "sandbox"})
    with pytest.raises(errors.ConfigError, match="started with provider='sandbox', not 'kind'"):
        r.resume(outcome.run_id, {"provider": "kind"})


def test_unknown_run_id_is_a_config_error(tmp_path: Path) -> None:
    """Resuming a run id that is not in the state dir says so and points at `dr runs`."""
    r, _ = make(tmp_path, FnStep("a"))
    with pytest.raises(errors.ConfigError, match="no run '20990101T000000Z-abcdef'") as info:
        r.resume("20990101T000000Z-abcdef")
    assert (2, True) == (info.value.exit_code, "dr runs" in info.value.hint)


def test_a_held_resource_is_entered_once_and_left_when_the_run_ends(tmp_path: Path) -> None:
    """Two steps asking for the same run resource share one; it is left after the last step, even on failure."""
    events: list[str] = []

    @contextlib.contextmanager
    def resource() -> Iterator[str]:
        events.append("enter")
        yield "lease"
        events.append("exit")

    seen: list[str] = []

    def use(ctx: step.StepContext) -> None:
        seen.append(ctx.hold("lease", resource))

    def fail(ctx: step.StepContext) -> None:
        use(ctx)
        assert events == ["enter"], "left before the run ended"
        raise errors.PermanentError("boom")

    run, _ = make(tmp_path, FnStep("a", run=use), FnStep("b", "a", run=fail))
    outcome = run.start()
    assert outcome.status == "failed"
    assert seen == ["lease", "lease"]
    assert events == ["enter", "exit"]
