"""The `dr recover` use case: build the recovery plan from config, preview it, run or resume it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

from dr import config as config_mod
from dr import errors
from dr.engine import checkpoints, runner
from dr.engine import plan as plan_mod
from dr.engine import step as step_mod
from dr.recovery import steps
from dr.snapshots import service

PLAN_NAME = "recover"
ClusterMode = Literal["new", "existing"]
CREATING_PROVIDERS = ("sandbox", "kind", "k3s")


def build_plan(
    config: config_mod.Config,
    *,
    classes: tuple[type[step_mod.Step], ...] = steps.ALL,
    name: str = PLAN_NAME,
) -> plan_mod.Plan:
    """The steps, with per-step timeout/attempt overrides from `steps:` in the config."""
    unknown = sorted(set(config.steps) - set(steps.NAMES))
    if unknown:
        where = str(config.source) if config.source else "configuration"
        raise errors.ConfigError(
            f"{where}: field `steps.{unknown[0]}`: no such step; the steps are {', '.join(steps.NAMES)}",
            runbook=config_mod.RUNBOOK,
        )
    built: list[step_mod.Step] = []
    for cls in classes:
        override = config.steps.get(cls.name)
        retry = None
        if override and override.attempts is not None:
            retry = step_mod.RetryPolicy(**{**cls.default_retry.__dict__, "attempts": override.attempts})
        built.append(cls(timeout=override.timeout if override else None, retry=retry))
    return plan_mod.Plan(name, built)


def run_params(config: config_mod.Config, cluster: ClusterMode, provider: str | None) -> dict[str, Any]:
    """The run's recorded parameters, after checking that the cluster mode and provider agree."""
    chosen = provider or ("kubeconfig" if cluster == "existing" else config.cluster.provider)
    if cluster == "new" and chosen not in CREATING_PROVIDERS:
        raise errors.ConfigError(
            f"--cluster new needs a provider that creates a cluster ({', '.join(CREATING_PROVIDERS)}), not {chosen!r}",
            hint="to recover into a cluster that already exists, use --cluster existing",
        )
    if cluster == "existing" and chosen != "kubeconfig":
        raise errors.ConfigError(
            f"--cluster existing targets a cluster through its kubeconfig; provider {chosen!r} creates one",
            hint="use --cluster new with that provider, or --provider kubeconfig",
        )
    return {"cluster": cluster, "provider": chosen, "cluster_name": config.cluster.name}


@dataclass(frozen=True)
class PreviewRow:
    """What a run would do with one step."""

    position: int
    step: str
    state: str
    action: str
    requires: tuple[str, ...]


def preview(
    config: config_mod.Config, store: checkpoints.CheckpointStore | None, resume: str | None
) -> list[PreviewRow]:
    """What `dr recover` would do, without contacting anything or taking the lock."""
    plan = build_plan(config)
    record = store.load(resume) if (store is not None and resume) else None
    rows = []
    for i, s in enumerate(plan, start=1):
        rec = record.steps.get(s.name) if record else None
        state = rec.state if rec else "pending"
        if rec and rec.done:
            action = "keep: done in this run"
        elif rec and rec.state in ("running", "interrupted", "failed"):
            action = "re-enter through check(), then run if its end state does not hold"
        else:
            action = f"check, then run if needed: {s.summary}"
        rows.append(PreviewRow(i, s.name, state, action, s.requires))
    return rows


def recover(
    config: config_mod.Config,
    store: checkpoints.CheckpointStore,
    *,
    cluster: ClusterMode | None,
    provider: str | None,
    resume: str | None = None,
    snapshot: str | None = None,
    force: bool | None = None,
    abort_after: float | None = None,
    observer: runner.Observer | None = None,
) -> runner.Outcome:
    """Start or resume a recovery run; returns how it ended.

    `force` (None: not given) lets `vault-unseal` take a target whose Vault is already initialised.
    `abort_after` (seconds) stops the run at a safe point once that long has passed (a drill's stop condition).
    `observer` is told of each step as it goes (the CLI's live lines).
    """
    plan = build_plan(config)
    run = runner.Runner(plan, store, config=config, observer=observer)
    if abort_after is not None:
        timer = threading.Timer(abort_after, run.request_stop)
        timer.daemon = True
        timer.start()
        try:
            return _recover(run, config, cluster, provider, resume, snapshot, force)
        finally:
            timer.cancel()
    return _recover(run, config, cluster, provider, resume, snapshot, force)


def _recover(
    run: runner.Runner,
    config: config_mod.Config,
    cluster: ClusterMode | None,
    provider: str | None,
    resume: str | None,
    snapshot: str | None,
    force: bool | None,
) -> runner.Outcome:
    if resume:
        amend = {"force": True} if force else None  # answering the interlock's refusal on resume
        return run.resume(resume, {"cluster": cluster, "provider": provider, "snapshot": snapshot}, amend=amend)
    if cluster is None:
        raise errors.ConfigError("a new recovery needs --cluster new or --cluster existing")
    if snapshot:  # a mistyped id is refused before a cluster is built for it
        service.open_catalogue(config, read_only=True).get(snapshot)
    return run.start({**run_params(config, cluster, provider), "snapshot": snapshot or "latest", "force": bool(force)})
