"""The `dr` command line: parse, load config, call a use case, map the outcome to an exit code.

No logic lives here. Results go to stdout (tables, or JSON with `--output
json`), logs and errors to stderr. Exit codes: 0 ok, 1 failed, 2 usage or
configuration, 3 lock held, 130 stopped by a signal (resumable).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar, cast

import click

from dr import __version__, errors, logs, secret, views
from dr import config as config_mod
from dr.engine import checkpoints, locks
from dr.ops import vault as vault_ops
from dr.recovery import recover as recover_mod

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """Global options, carried from the group to each command."""

    def __init__(self, config_path: str | None, log_format: str | None, verbose: bool) -> None:
        self.config_path = config_path
        self.log_format = log_format
        self.verbose = verbose
        self.json_errors = False

    def load(self, **flags: tuple[str, Any]) -> config_mod.Config:
        """Load the config with this command's flags on top, then configure logging from it."""
        if self.log_format:
            flags["log_format"] = ("--log-format", self.log_format)
        config = config_mod.load(self.config_path, flags=flags)
        logs.configure(config.log_format, verbose=self.verbose)
        self.json_errors = logs.resolve_format(config.log_format, sys.stderr) == "json"
        return config


class DRGroup(click.Group):
    """Renders `DRError`s (message, hint, runbook) and exits with their code: no tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.DRError as exc:
            app = ctx.obj if isinstance(ctx.obj, App) else None
            _show_error(exc, as_json=bool(app and app.json_errors))
            ctx.exit(exc.exit_code)


def _show_error(exc: errors.DRError, *, as_json: bool, resume: str | None = None) -> None:
    if as_json:
        extra = {"resume": resume} if resume else {}
        click.echo(json.dumps({"event": "command_failed", "level": "error", **exc.to_dict(), **extra}), err=True)
    else:
        click.echo(views.error(exc) + (f"\nresume with: {resume}" if resume else ""), err=True)


def _emit(data: Any, text: str, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(secret.redact_value(data), indent=2))
    else:
        click.echo(text)


def state_dir_option(func: F) -> F:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Where runs keep checkpoints and locks [env DR_STATE_DIR; default ./.dr].",
    )(func)


def output_option(func: F) -> F:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Output format.",
    )(func)


@click.group(cls=DRGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="dr")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Configuration file [env DR_CONFIG; default ./dr.yaml if present].",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default=None,
    help="Log format on stderr; auto = console on a terminal, JSON lines otherwise [env DR_LOG_FORMAT].",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug events too.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_format: str | None, verbose: bool) -> None:
    """Disaster recovery for a GitOps Kubernetes platform (K3s, Argo CD, Vault/OpenBao, ESO).

    Start with `dr plan` to see the recovery steps, and runbooks/README.md for
    the manual procedure. Exit codes: 0 ok, 1 failed, 2 usage or configuration,
    3 another run holds the lock, 130 stopped by a signal (resumable).
    """
    ctx.obj = App(config_path, log_format, verbose)


@cli.command("plan")
@output_option
@click.pass_obj
def plan_cmd(app: App, output: str) -> None:
    """Show the recovery steps: order, dependencies, what each checks."""
    config = app.load()
    rows = recover_mod.build_plan(config).describe()
    _emit({"plan": recover_mod.PLAN_NAME, "steps": rows}, views.plan(rows), output)


@cli.command("recover")
@click.option(
    "--cluster",
    "cluster",
    type=click.Choice(["new", "existing"]),
    default=None,
    help="Rebuild on a new cluster, or on an existing one reached through its kubeconfig.",
)
@click.option(
    "--provider",
    type=click.Choice(["sandbox", "kind", "k3s", "kubeconfig"]),
    default=None,
    help="How the cluster is provided [env DR_PROVIDER; config cluster.provider].",
)
@click.option("--resume", "resume", metavar="RUN_ID", default=None, help="Continue a stopped or failed run.")
@click.option("--dry-run", is_flag=True, help="Print what would run; change nothing.")
@state_dir_option
@output_option
@click.pass_context
def recover_cmd(
    ctx: click.Context,
    cluster: str | None,
    provider: str | None,
    resume: str | None,
    dry_run: bool,
    state_dir: str | None,
    output: str,
) -> None:
    """Rebuild the platform through the seven recovery steps; resumable after any crash."""
    app: App = ctx.obj
    if cluster is None and resume is None:
        raise click.UsageError("give --cluster new|existing, or --resume RUN_ID to continue a run")
    mode = cast("recover_mod.ClusterMode | None", cluster)  # click.Choice allows only these two
    config = app.load(state_dir=("--state-dir", state_dir), **{"cluster.provider": ("--provider", provider)})
    if dry_run:
        if resume and not config.state_dir.is_dir():
            raise errors.ConfigError(f"no run {resume!r}: state dir {config.state_dir} does not exist")
        store = checkpoints.CheckpointStore(config.state_dir) if resume else None
        params = recover_mod.run_params(config, mode, provider) if mode else {}
        rows = recover_mod.preview(config, store, resume)
        text = "dry run: nothing is changed, nothing is contacted\n"
        text += f"run: {resume or 'new (its id is assigned when it starts)'}"
        text += "".join(f"  {k}={v}" for k, v in params.items()) + "\n\n"
        text += views.table(("#", "STEP", "STATE", "WOULD"), ((r.position, r.step, r.state, r.action) for r in rows))
        _emit({"dry_run": True, "run_id": resume, "params": params, "steps": [asdict(r) for r in rows]}, text, output)
        return
    store = checkpoints.CheckpointStore(config.state_dir)
    outcome = recover_mod.recover(config, store, cluster=mode, provider=provider, resume=resume)
    run = store.load(outcome.run_id)
    _emit(run.to_json(), views.run_status(run, None, advice=False), output)
    if outcome.error is not None and outcome.status != "succeeded":
        _show_error(outcome.error, as_json=app.json_errors, resume=f"dr recover --resume {outcome.run_id}")
    ctx.exit(outcome.exit_code)


@cli.command("status")
@click.argument("run_id", required=False)
@state_dir_option
@output_option
@click.pass_obj
def status_cmd(app: App, run_id: str | None, state_dir: str | None, output: str) -> None:
    """Per-step state, attempts and timings of a run (the latest if RUN_ID is omitted)."""
    config = app.load(state_dir=("--state-dir", state_dir))
    store = checkpoints.CheckpointStore(config.state_dir)
    run = store.load(run_id) if run_id else store.latest()
    if run is None:
        raise errors.ConfigError(
            f"no runs in state dir {store.state_dir}",
            hint="start one with `dr recover`, or pass the state dir of an earlier run with --state-dir",
        )
    holder = locks.StateLock(store.state_dir).holder()
    data = {**run.to_json(), "live": bool(holder and holder.get("run_id") == run.run_id)}
    _emit(data, views.run_status(run, holder), output)


@cli.command("runs")
@state_dir_option
@output_option
@click.pass_obj
def runs_cmd(app: App, state_dir: str | None, output: str) -> None:
    """List the runs in the state dir, newest first."""
    config = app.load(state_dir=("--state-dir", state_dir))
    store = checkpoints.CheckpointStore(config.state_dir)
    items = list(store.iter_runs())
    data = [
        {"error": str(i)}
        if isinstance(i, errors.CheckpointError)
        else {
            "run_id": i.run_id,
            "plan": i.plan,
            "status": i.status,
            "created_at": i.created_at,
            "ended_at": i.ended_at,
            "operator": i.operator,
            "failed_steps": [n for n, r in i.steps.items() if r.state == "failed"],
        }
        for i in items
    ]
    _emit({"runs": data}, views.runs(items), output)


def address_option(func: F) -> F:
    return click.option(
        "--address",
        "addresses",
        multiple=True,
        metavar="URL",
        help="A Vault node's API address; repeat for each node [default: vault.addresses, BAO_ADDR, VAULT_ADDR].",
    )(func)


@cli.group("vault")
def vault_group() -> None:
    """Vault/OpenBao: status of every node, and unseal with shares from a key source."""


@vault_group.command("status")
@address_option
@output_option
@click.pass_context
def vault_status_cmd(ctx: click.Context, addresses: tuple[str, ...], output: str) -> None:
    """Every node's seal and HA state, Raft peers and autopilot; exit 0 only when healthy."""
    app: App = ctx.obj
    health = vault_ops.status(app.load(), addresses=addresses)
    _emit(health.to_dict(), views.vault_health(health), output)
    ctx.exit(errors.EXIT_OK if health.healthy else errors.EXIT_FAILED)


@vault_group.command("unseal")
@address_option
@click.option("--all", "all_nodes", is_flag=True, help="Unseal every configured node, not only the first.")
@click.option(
    "--key-file",
    "key_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="A file holding one unseal share (mode 0600); repeat for each share.",
)
@output_option
@click.pass_obj
def vault_unseal_cmd(
    app: App, addresses: tuple[str, ...], all_nodes: bool, key_files: tuple[str, ...], output: str
) -> None:
    """Unseal nodes with shares from --key-file or the configured key source."""
    results = vault_ops.unseal(app.load(), addresses=addresses, all_nodes=all_nodes, key_files=key_files)
    rows = [
        (address, "unsealed" if not st.sealed else "sealed", f"{st.threshold}/{st.shares}", st.version)
        for address, st in results
    ]
    data = {"nodes": [{"address": a, "sealed": st.sealed, "t": st.threshold, "n": st.shares} for a, st in results]}
    _emit(data, views.table(("ADDRESS", "STATE", "T/N", "VERSION"), rows), output)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="dr")
