"""The `dr bootstrap` use case: the first install of the platform on a fresh cluster.

The same steps a recovery runs, on the same engine (checkpoints, resume,
lock), except that Vault is new: it is initialised and its keys go to the
key sink instead of a snapshot being restored. Drills use it to build the
platform they then destroy.
"""

from __future__ import annotations

from dr import config as config_mod
from dr.engine import checkpoints, runner
from dr.engine import plan as plan_mod
from dr.recovery import recover, steps

PLAN_NAME = "bootstrap"


def build_plan(config: config_mod.Config) -> plan_mod.Plan:
    return recover.build_plan(config, classes=steps.BOOTSTRAP, name=PLAN_NAME)


def bootstrap(
    config: config_mod.Config,
    store: checkpoints.CheckpointStore,
    *,
    provider: str | None,
    resume: str | None = None,
    observer: runner.Observer | None = None,
) -> runner.Outcome:
    """Start or resume a bootstrap run; returns how it ended (`observer`: the CLI's live lines)."""
    run = runner.Runner(build_plan(config), store, config=config, observer=observer)
    if resume:
        return run.resume(resume, {"provider": provider})
    return run.start({"provider": provider or config.cluster.provider, "cluster_name": config.cluster.name})
