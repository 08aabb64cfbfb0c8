"""The `dr` command line: parse, load config, call a use case, map the outcome to an exit code.

No logic lives here. Results go to stdout (tables, or JSON with `--output
json`), logs and errors to stderr. Exit codes: 0 ok, 1 failed, 2 usage or
configuration, 3 lock held, 130 stopped by a signal (resumable).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import click

from dr import __version__, drills, errors, files, secret, views
from dr.adapters import sandbox_process
from dr.engine import checkpoints, locks

if TYPE_CHECKING:
    from dr import config as config_mod
    from dr.recovery import recover as recover_mod

# Each command imports its use case when it runs: `dr --help` and `dr --version` need none, and the kubernetes
# client, hvac, boto3, pydantic and structlog are most of a start-up's time (scripts/bench_cli.py).

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
        from dr import config as config_mod
        from dr import logs

        if self.log_format:
            flags["log_format"] = ("--log-format", self.log_format)
        config = config_mod.load(self.config_path, flags=flags)
        logs.configure(config.log_format, verbose=self.verbose)
        self.json_errors = logs.resolve_format(config.log_format, sys.stderr) == "json"
        return config

    def live(self, config: config_mod.Config, output: str) -> contextlib.AbstractContextManager[Any]:
        """Live lines for a run on a terminal (`dr.progress`); nothing for a pipe, JSON logs or -o json."""
        from dr import progress

        return progress.live(
            progress.wanted(config.log_format, output), log_format=config.log_format, verbose=self.verbose
        )


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
    elif output == "yaml":
        import yaml

        plain = json.loads(json.dumps(secret.redact_value(data)))  # the same values as JSON, as YAML writes them
        click.echo(yaml.safe_dump(plain, sort_keys=False), nl=False)
    else:
        click.echo(text)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises `Interrupted` (exit 130) where it lands, so that open uploads are aborted on the way out."""

    def stop(signum: int, frame: object) -> None:
        raise errors.Interrupted("stopped by SIGTERM; nothing was committed", hint="run the save again")

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; a library caller keeps its own
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def state_dir_option(func: F) -> F:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Where runs keep checkpoints and locks [env DR_STATE_DIR; default ./.dr].",
    )(func)


def run_options(func: F) -> F:
    """The cluster options and --resume, shared by the commands that start or continue a run."""
    func = click.option("--resume", "resume", metavar="RUN_ID", default=None, help="Continue a stopped or failed run.")(
        func
    )
    return cluster_options(func)


def cluster_options(func: F) -> F:
    """--provider, --kubeconfig and --context: which cluster, reached how."""
    func = click.option(
        "--context",
        metavar="NAME",
        default=None,
        help="The kubeconfig context to use [config cluster.context; default the current context].",
    )(func)
    func = click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False),
        default=None,
        help="The kubeconfig of an existing cluster (--provider kubeconfig) [config cluster.kubeconfig; default"
        " KUBECONFIG (a file, or a list merged as kubectl merges it), else ~/.kube/config].",
    )(func)
    return click.option(
        "--provider",
        type=click.Choice(["sandbox", "kind", "k3s", "kubeconfig"]),
        default=None,
        help="How the cluster is provided [env DR_PROVIDER; config cluster.provider].",
    )(func)


def _cluster_flags(provider: str | None, kubeconfig: str | None, context: str | None) -> dict[str, tuple[str, Any]]:
    return {
        "cluster.provider": ("--provider", provider),
        "cluster.kubeconfig": ("--kubeconfig", kubeconfig),
        "cluster.context": ("--context", context),
    }


def output_option(func: F) -> F:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(["text", "json", "yaml"]),
        default="text",
        show_default=True,
        help="Output format.",
    )(func)


# The global options, accepted before the command (`dr --config F plan`) and after it (`dr plan --config F`),
# as kubectl, velero and bao accept theirs: the root group takes them as parameters, every other command as
# options that write into the App (`_accept_global_options_everywhere`).
GLOBAL_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("--config", "config_path"),
        {
            "type": click.Path(dir_okay=False),
            "default": None,
            "help": "Configuration file [env DR_CONFIG; default ./dr.yaml if present].",
        },
    ),
    (
        ("--log-format", "log_format"),
        {
            "type": click.Choice(["auto", "console", "json"]),
            "default": None,
            "help": "Log format on stderr; auto = console on a terminal, JSON lines otherwise [env DR_LOG_FORMAT].",
        },
    ),
    (("-v", "--verbose", "verbose"), {"is_flag": True, "default": False, "help": "Log debug events too."}),
]


def global_options(func: F) -> F:
    for decls, attrs in reversed(GLOBAL_OPTIONS):
        func = click.option(*decls, **attrs)(func)
    return func


def _remember_global(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A global option given after a command's name: it wins over the same option given before."""
    app = ctx.find_object(App)
    if app is not None and param.name and value not in (None, False):
        setattr(app, param.name, value)
    return value


def _accept_global_options_everywhere(group: click.Group) -> None:
    for command in group.commands.values():
        command.params.extend(
            click.Option(decls, expose_value=False, callback=_remember_global, **attrs)
            for decls, attrs in GLOBAL_OPTIONS
        )
        if isinstance(command, click.Group):
            _accept_global_options_everywhere(command)


@click.group(cls=DRGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="dr")
@global_options
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
    from dr.recovery import recover as recover_mod

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
@run_options
@click.option(
    "--snapshot", "snapshot", metavar="ID", default=None, help="Restore this snapshot [default: the latest good one]."
)
@click.option(
    "--force",
    is_flag=True,
    help="Restore even over a Vault the target already has initialised (its data is replaced by the snapshot).",
)
@click.option("--dry-run", is_flag=True, help="Print what would run; change nothing.")
@click.option(
    "--skip-preflight",
    is_flag=True,
    help="Start without the `dr doctor` checks (a new run checks them first; a resumed run does not).",
)
@state_dir_option
@output_option
@click.pass_context
def recover_cmd(
    ctx: click.Context,
    cluster: str | None,
    provider: str | None,
    kubeconfig: str | None,
    context: str | None,
    resume: str | None,
    snapshot: str | None,
    force: bool,
    dry_run: bool,
    skip_preflight: bool,
    state_dir: str | None,
    output: str,
) -> None:
    """Rebuild the platform through the seven recovery steps; resumable after any crash.

    A new run first checks what `dr doctor` checks (the cluster, the permissions, the target's Vault, the key
    source, the snapshot) and starts nothing when one fails.
    """
    from dr.recovery import recover as recover_mod
    from dr.reports import history as report_history
    from dr.reports import record as report_record

    app: App = ctx.obj
    if cluster is None and resume is None:
        raise click.UsageError("give --cluster new|existing, or --resume RUN_ID to continue a run")
    mode = cast("recover_mod.ClusterMode | None", cluster)  # click.Choice allows only these two
    config = app.load(state_dir=("--state-dir", state_dir), **_cluster_flags(provider, kubeconfig, context))
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
    if resume is None and mode is not None and not skip_preflight:
        _preflight(config, mode, provider, snapshot, force)
    store = checkpoints.CheckpointStore(config.state_dir)
    with app.live(config, output) as observer:
        outcome = recover_mod.recover(
            config,
            store,
            cluster=mode,
            provider=provider,
            resume=resume,
            snapshot=snapshot,
            force=force or None,
            observer=observer,
        )
    run = store.load(outcome.run_id)
    targets = report_record.Targets(config.targets.rto, config.targets.rpo)
    report_history.remember(config.state_dir, report_record.build(run, targets=targets))
    _emit(views.run_json(run), views.run_status(run, None, advice=False), output)
    if outcome.error is not None and outcome.status != "succeeded":
        _show_error(outcome.error, as_json=app.json_errors, resume=f"dr recover --resume {outcome.run_id}")
    ctx.exit(outcome.exit_code)


def _preflight(
    config: config_mod.Config, mode: recover_mod.ClusterMode, provider: str | None, snapshot: str | None, force: bool
) -> None:
    from dr.recovery import doctor

    report = doctor.diagnose(
        config, cluster=mode, provider=provider, snapshot=snapshot, force=force, read_snapshot=False
    )
    if not report.ready:
        click.echo(views.doctor(report), err=True)
        failed = report.failed()
        # The exit code the first finding would have had in the run: 2 for a configuration mistake.
        kind = errors.ConfigError if failed[0].exit_code == errors.EXIT_CONFIG else errors.PermanentError
        raise kind(
            f"preflight: {len(failed)} check(s) failed ({', '.join(c.name for c in failed)}); nothing was started",
            hint="fix what the table says, check again with `dr doctor`, or start anyway with --skip-preflight",
            runbook=doctor.RUNBOOK,
        )


@cli.command("doctor")
@click.option(
    "--for",
    "purpose",
    type=click.Choice(["recover", "snapshot"]),
    default="recover",
    show_default=True,
    help="What to check for: a recovery, or the nightly `dr snapshot save`.",
)
@click.option(
    "--cluster",
    "cluster",
    type=click.Choice(["new", "existing"]),
    default="new",
    show_default=True,
    help="The recovery to check for, as `dr recover --cluster` takes it.",
)
@cluster_options
@click.option("--snapshot", "snapshot", metavar="ID", default=None, help="The snapshot to check [default: latest].")
@click.option("--force", is_flag=True, help="As `dr recover --force`: an initialised target Vault is a warning.")
@output_option
@click.pass_context
def doctor_cmd(
    ctx: click.Context,
    purpose: str,
    cluster: str,
    provider: str | None,
    kubeconfig: str | None,
    context: str | None,
    snapshot: str | None,
    force: bool,
    output: str,
) -> None:
    """Check that a recovery (or the snapshot job) could start: cluster, permissions, Vault, keys, store.

    Only reads: nothing is created and no share is submitted. Exit 0 when nothing failed, 1 otherwise;
    the table says what to fix.
    """
    from dr.recovery import doctor

    app: App = ctx.obj
    config = app.load(**_cluster_flags(provider, kubeconfig, context))
    report = doctor.diagnose(
        config,
        purpose=cast("doctor.Purpose", purpose),
        cluster=cast("recover_mod.ClusterMode", cluster),
        provider=provider,
        snapshot=snapshot,
        force=force,
    )
    _emit(report.to_dict(), views.doctor(report), output)
    ctx.exit(errors.EXIT_OK if report.ready else errors.EXIT_FAILED)


@cli.command("bootstrap")
@run_options
@state_dir_option
@output_option
@click.pass_context
def bootstrap_cmd(
    ctx: click.Context,
    provider: str | None,
    kubeconfig: str | None,
    context: str | None,
    resume: str | None,
    state_dir: str | None,
    output: str,
) -> None:
    """Install the platform on a fresh cluster: Argo CD, the app-of-apps, a new Vault (keys to the key sink), ESO.

    The same steps as a recovery, without the restore; resumable after any crash. Exit 0 only when every step
    verified.
    """
    from dr.recovery import bootstrap as bootstrap_mod

    app: App = ctx.obj
    config = app.load(state_dir=("--state-dir", state_dir), **_cluster_flags(provider, kubeconfig, context))
    store = checkpoints.CheckpointStore(config.state_dir)
    with app.live(config, output) as observer:
        outcome = bootstrap_mod.bootstrap(config, store, provider=provider, resume=resume, observer=observer)
    run = store.load(outcome.run_id)
    _emit(views.run_json(run), views.run_status(run, None, advice=False), output)
    if outcome.error is not None and outcome.status != "succeeded":
        _show_error(outcome.error, as_json=app.json_errors, resume=f"dr bootstrap --resume {outcome.run_id}")
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
    data = {**views.run_json(run), "live": bool(holder and holder.get("run_id") == run.run_id)}
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
    from dr.ops import vault as vault_ops

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
    from dr.ops import vault as vault_ops

    results = vault_ops.unseal(app.load(), addresses=addresses, all_nodes=all_nodes, key_files=key_files)
    rows = [
        (address, "unsealed" if not st.sealed else "sealed", f"{st.threshold}/{st.shares}", st.version)
        for address, st in results
    ]
    data = {"nodes": [{"address": a, "sealed": st.sealed, "t": st.threshold, "n": st.shares} for a, st in results]}
    _emit(data, views.table(("ADDRESS", "STATE", "T/N", "VERSION"), rows), output)


def store_options(func: F) -> F:
    func = click.option(
        "--s3-endpoint",
        default=None,
        metavar="URL",
        help="Endpoint of an S3-compatible service [config snapshots.s3_endpoint].",
    )(func)
    func = click.option(
        "--cluster",
        "cluster_name",
        default=None,
        metavar="NAME",
        help="Cluster name: snapshots live under <store>/<cluster>/ [config cluster.name].",
    )(func)
    return click.option(
        "--store",
        default=None,
        metavar="URL",
        help="file:///path, a path, or s3://bucket/prefix [env DR_STORE; default ./snapshots].",
    )(func)


def _store_config(app: App, store: str | None, cluster_name: str | None, s3_endpoint: str | None) -> config_mod.Config:
    return app.load(
        **{
            "snapshots.store": ("--store", store),
            "cluster.name": ("--cluster", cluster_name),
            "snapshots.s3_endpoint": ("--s3-endpoint", s3_endpoint),
        }
    )


COUNT = click.IntRange(min=0)


@cli.group("snapshot")
def snapshot_group() -> None:
    """Vault Raft snapshots: save, list, show, verify, prune, schedule."""


@snapshot_group.command("save")
@store_options
@click.option("--prune", "prune_after", is_flag=True, help="Apply the retention policy after a successful save.")
@output_option
@click.pass_obj
def snapshot_save_cmd(
    app: App, store: str | None, cluster_name: str | None, s3_endpoint: str | None, prune_after: bool, output: str
) -> None:
    """Stream a snapshot from the active Vault node into the store; commit it only when complete."""
    from dr.snapshots import service as snapshot_service

    config = _store_config(app, store, cluster_name, s3_endpoint)
    with _terminate_as_interrupt():  # a CronJob's pod is stopped with SIGTERM: abort the upload, commit nothing
        saved, pruned = snapshot_service.save_now(config, prune_after=prune_after)
    m = saved.manifest
    took = views.seconds(saved.duration_s)
    text = f"saved {m.id}: {m.size} bytes, sha256 {m.sha256}, Raft index {m.raft_index}, in {took}"
    if pruned is not None:
        text += "\n" + views.prune(pruned)
    _emit(
        {
            "manifest": dataclasses.asdict(m),
            "duration_s": saved.duration_s,
            "pruned": dataclasses.asdict(pruned) if pruned else None,
        },
        text,
        output,
    )


@snapshot_group.command("list")
@store_options
@output_option
@click.pass_obj
def snapshot_list_cmd(
    app: App, store: str | None, cluster_name: str | None, s3_endpoint: str | None, output: str
) -> None:
    """Committed snapshots, newest first, with size, age and verification state; orphans apart."""
    from dr.snapshots import catalogue
    from dr.snapshots import service as snapshot_service

    config = _store_config(app, store, cluster_name, s3_endpoint)
    cat = snapshot_service.open_catalogue(config, read_only=True)
    entries, orphans, problems = cat.scan()
    others = {} if entries else cat.other_clusters()  # a wrong --cluster is told where the snapshots are
    data = {
        "cluster": cat.cluster,
        "snapshots": [e.to_dict() for e in entries],
        "problems": problems,
        "orphans": [{"key": o.key, "size": o.size, "modified": o.modified.isoformat()} for o in orphans],
        "other_clusters": others,
    }
    hint = catalogue.elsewhere(others)
    empty = f"no snapshots of cluster {cat.cluster} in {cat.store.url}" + (f"\n{hint}" if hint else "")
    _emit(data, views.snapshots(entries, orphans, problems, empty=empty), output)


@snapshot_group.command("show")
@click.argument("snapshot_id", metavar="ID|latest")
@store_options
@output_option
@click.pass_obj
def snapshot_show_cmd(
    app: App, snapshot_id: str, store: str | None, cluster_name: str | None, s3_endpoint: str | None, output: str
) -> None:
    """One snapshot's manifest and latest verification."""
    from dr.snapshots import service as snapshot_service

    config = _store_config(app, store, cluster_name, s3_endpoint)
    entry = snapshot_service.open_catalogue(config, read_only=True).get(snapshot_id)
    data = entry.to_dict()
    _emit(data, "\n".join(f"{k}: {v}" for k, v in data.items()), output)


@snapshot_group.command("verify")
@click.argument("snapshot_id", metavar="ID|latest")
@click.option(
    "--restore-test",
    is_flag=True,
    help="Also restore into a throwaway local OpenBao with the original shares and read the canary.",
)
@store_options
@output_option
@click.pass_context
def snapshot_verify_cmd(
    ctx: click.Context,
    snapshot_id: str,
    restore_test: bool,
    store: str | None,
    cluster_name: str | None,
    s3_endpoint: str | None,
    output: str,
) -> None:
    """Check a snapshot's checksum and archive; exit 1 with what failed."""
    from dr.snapshots import service as snapshot_service

    app: App = ctx.obj
    config = _store_config(app, store, cluster_name, s3_endpoint)
    entry, result = snapshot_service.verify_now(config, snapshot_id, restore_test=restore_test)
    text = f"{entry.manifest.id}: {'OK' if result.ok else 'FAILED'}: {result.detail}"
    _emit({"id": entry.manifest.id, **dataclasses.asdict(result)}, text, output)
    if not result.ok:
        ctx.exit(errors.EXIT_FAILED)


@snapshot_group.command("prune")
@click.option("--keep-last", type=COUNT, default=None, help="Keep the N newest [config snapshots.keep_last].")
@click.option("--keep-daily", type=COUNT, default=None, help="Keep the newest of each of the last N days.")
@click.option("--keep-weekly", type=COUNT, default=None, help="Keep the newest of each of the last N ISO weeks.")
@click.option("--keep-monthly", type=COUNT, default=None, help="Keep the newest of each of the last N months.")
@click.option("--dry-run", is_flag=True, help="Print what would be removed; remove nothing.")
@store_options
@output_option
@click.pass_context
def snapshot_prune_cmd(
    ctx: click.Context,
    keep_last: int | None,
    keep_daily: int | None,
    keep_weekly: int | None,
    keep_monthly: int | None,
    dry_run: bool,
    store: str | None,
    cluster_name: str | None,
    s3_endpoint: str | None,
    output: str,
) -> None:
    """Remove snapshots outside the retention policy; never the newest good one, never a young one."""
    from dr.snapshots import service as snapshot_service

    app: App = ctx.obj
    config = _store_config(app, store, cluster_name, s3_endpoint)
    rules = snapshot_service.policy(
        config, keep_last=keep_last, keep_daily=keep_daily, keep_weekly=keep_weekly, keep_monthly=keep_monthly
    )
    result = snapshot_service.prune(snapshot_service.open_catalogue(config), rules, dry_run=dry_run)
    _emit(dataclasses.asdict(result), views.prune(result), output)
    if result.failed:
        ctx.exit(errors.EXIT_FAILED)


@snapshot_group.command("schedule")
@click.option("--cron", required=True, help='Five-field schedule in UTC, e.g. "0 2 * * *".')
@click.option(
    "--output",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write a kustomization directory here instead of printing YAML.",
)
@click.option(
    "--image",
    metavar="REF",
    default=None,
    help="The CronJob's image, best pinned by digest (NAME:TAG@sha256:…, what `make image` prints)"
    f" [config snapshots.image; default ghcr.io/dr-project/dr:{__version__}].",
)
@click.pass_obj
def snapshot_schedule_cmd(app: App, cron: str, out_dir: str | None, image: str | None) -> None:
    """Render the nightly snapshot CronJob, its RBAC and its alerts (PrometheusRule)."""
    from dr.snapshots import schedule as snapshot_schedule

    rendered = snapshot_schedule.render(app.load(**{"snapshots.image": ("--image", image)}), cron)
    if out_dir is None:
        click.echo("---\n".join(text for name, text in sorted(rendered.items()) if name != "kustomization.yaml"))
        return
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (target / name).write_text(text)
    click.echo(f"wrote {len(rendered)} files to {target} (add it to a kustomization in the platform repo)")


@cli.group("drill", invoke_without_command=True)
@click.option(
    "--provider", type=click.Choice(["sandbox", "kind"]), default="sandbox", show_default=True, help="Where to build."
)
@click.option("--scenario", type=click.Choice(drills.SCENARIOS), default="total-loss", show_default=True)
@click.option("--target-rto", metavar="DURATION", default=None, help="e.g. 15m [config targets.rto; default 15m].")
@click.option("--target-rpo", metavar="DURATION", default=None, help="e.g. 24h [config targets.rpo; default 24h].")
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write report.json/.md/.html and junit.xml here [config drills.report_dir].",
)
@click.option("--keep", is_flag=True, help="Keep the recovered platform (and its keys) for inspection.")
@click.option(
    "--fault",
    type=click.Choice(drills.FAULTS),
    default=None,
    help="Rehearse a failing recovery: make the new sandbox's External Secrets fail every sync.",
)
@state_dir_option
@output_option
@click.pass_context
def drill_cmd(
    ctx: click.Context,
    provider: str,
    scenario: str,
    target_rto: str | None,
    target_rpo: str | None,
    report_dir: str | None,
    keep: bool,
    fault: str | None,
    state_dir: str | None,
    output: str,
) -> None:
    """A game day: build a throwaway platform, write canaries, snapshot, destroy it, recover it, prove it.

    Exit 0 only when the recovery verified, every canary is where it must be (or absent) and the targets are
    met. Everything the drill made is removed at the end, also on failure or Ctrl-C (`--keep` keeps the
    recovered platform); `dr drill cleanup` removes what a crashed drill left.
    """
    from dr.drills import drill as drill_mod
    from dr.reports import render as report_render

    if ctx.invoked_subcommand is not None:
        return
    app: App = ctx.obj
    config = app.load(
        state_dir=("--state-dir", state_dir),
        **{"targets.rto": ("--target-rto", target_rto), "targets.rpo": ("--target-rpo", target_rpo)},
    )
    options = drill_mod.Options(
        provider=cast("Literal['sandbox', 'kind']", provider),
        scenario=scenario,
        report_dir=Path(report_dir) if report_dir else config.drills.report_dir,
        keep=keep,
        fault=fault,
    )
    result = drill_mod.Drill(config, options).run()
    report = result.report
    where = " and ".join(f"{d}/" for d in reversed(result.written))
    text = report_render.text(report) + f"\n\nreport.json, report.md, report.html and junit.xml in {where}"
    _emit(report, text, output)
    if report["error"] and output == "text":
        err = report["error"]
        click.echo(f"error: {err['message']}\n  hint: {err['hint']}\n  runbook: {err['runbook']}", err=True)
    ctx.exit(result.exit_code)


@drill_cmd.command("cleanup")
@state_dir_option
@click.pass_obj
def drill_cleanup_cmd(app: App, state_dir: str | None) -> None:
    """Remove the clusters, keys and snapshots that crashed (or --keep) drills left in this state dir."""
    from dr.drills import drill as drill_mod

    config = app.load(state_dir=("--state-dir", state_dir))
    removed = drill_mod.cleanup(config)
    click.echo("\n".join(f"removed {r}" for r in removed) if removed else "nothing left by earlier drills")


class ReportGroup(click.Group):
    """`dr report [RUN_ID] …` shows one report; `dr report history …` is the subcommand beside it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@cli.group("report", cls=ReportGroup)
def report_group() -> None:
    """Recovery-time reports from the run history: `dr report [RUN_ID]`, `dr report history`."""


@report_group.command("show")
@click.argument("run_id", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "md", "json", "html", "junit"]),
    default="text",
    show_default=True,
    help="text for a terminal, md for a ticket, html with a timeline, junit for CI.",
)
@click.option("--output", "out", type=click.Path(dir_okay=False), default=None, help="Write to FILE, not stdout.")
@state_dir_option
@click.pass_obj
def report_show_cmd(app: App, run_id: str | None, fmt: str, out: str | None, state_dir: str | None) -> None:
    """One run's report (the latest if RUN_ID is omitted)."""
    from dr.reports import history as report_history
    from dr.reports import html as report_html
    from dr.reports import render as report_render

    config = app.load(state_dir=("--state-dir", state_dir))
    past = report_history.History(config.state_dir)
    report = past.get(run_id)
    if fmt == "json":
        body = json.dumps(report, indent=2) + "\n"
    elif fmt == "md":
        body = report_render.markdown(report)
    elif fmt == "junit":
        body = report_render.junit(report)
    elif fmt == "html":
        earlier = [r for r in past.reports(last=30, type_=report["type"]) if r["started_at"] < report["started_at"]]
        body = report_html.page(report, [*earlier, report])
    else:
        body = report_render.text(report) + "\n"
    if out is None:
        click.echo(body, nl=False)
        return
    files.write_atomic(Path(out), body.encode(), mode=0o644)
    click.echo(f"wrote {out}")


@report_group.command("history")
@click.option("--last", type=click.IntRange(min=1), default=20, show_default=True, help="Only the latest N runs.")
@click.option(
    "--type", "type_", type=click.Choice(["drill", "recover"]), default=None, help="Only drills or recoveries."
)
@click.option(
    "--fail-on-regression",
    type=click.FloatRange(min=0),
    metavar="PCT",
    default=None,
    help="Exit 1 when the latest RTO is more than PCT percent worse than the median of the runs before it.",
)
@state_dir_option
@output_option
@click.pass_context
def report_history_cmd(
    ctx: click.Context,
    last: int,
    type_: str | None,
    fail_on_regression: float | None,
    state_dir: str | None,
    output: str,
) -> None:
    """RTO p50/p95 per step and in total, the trend, the pass rate, and an optional regression gate."""
    from dr.reports import history as report_history
    from dr.reports import render as report_render
    from dr.reports import trends as report_trends

    app: App = ctx.obj
    config = app.load(state_dir=("--state-dir", state_dir))
    reports = report_history.History(config.state_dir).reports(last=last, type_=type_)
    if not reports:
        raise errors.ConfigError(
            f"no reports in the history of {config.state_dir}", hint="run `dr drill` first, or pass --state-dir"
        )
    found = report_trends.of(reports, fail_on_regression=fail_on_regression)
    _emit(found.to_json(), report_render.history_text(found), output)
    if found.regression.regressed:
        ctx.exit(errors.EXIT_FAILED)


@cli.group("sandbox")
def sandbox_group() -> None:
    """A local platform to try recoveries on: a Kubernetes API, Argo CD, ESO and real OpenBao pods."""


def sandbox_dir_option(func: F) -> F:
    return click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False),
        required=True,
        help="The sandbox's directory (kubeconfig, dr.yaml, state, logs).",
    )(func)


@sandbox_group.command("up")
@sandbox_dir_option
@click.option(
    "--repo",
    "repos",
    multiple=True,
    metavar="URL=DIR",
    help="Serve a Git repository URL from a local directory to Argo CD [default: the platform repo from"
    " examples/platform]. Repeatable; remembered in the dir.",
)
@click.option(
    "--pod-ready-seconds",
    type=click.FloatRange(0, 60),
    default=None,
    help="How long a simulated pod takes to become Ready [default: 1].",
)
@click.option("--api-latency-ms", type=click.IntRange(min=0), default=None, help="Delay every API request.")
@click.option(
    "--api-error-rate",
    type=click.FloatRange(0, 1),
    default=None,
    help="Answer this share of requests with 500/503/429 (with Retry-After).",
)
@click.option("--drop-watches/--keep-watches", default=None, help="End every watch after about a second.")
@click.option(
    "--backend",
    type=click.Choice(list(sandbox_process.BACKENDS)),
    default=None,
    help="real: kube-apiserver, kube-controller-manager, kube-scheduler and kine built by `make testbed`;"
    " emulated: the project's own API (where no Go toolchain is); auto: real when built"
    " [default: $DR_SANDBOX_BACKEND, else auto].",
)
@output_option
@click.pass_obj
def sandbox_up_cmd(
    app: App,
    directory: str,
    repos: tuple[str, ...],
    pod_ready_seconds: float | None,
    api_latency_ms: int | None,
    api_error_rate: float | None,
    drop_watches: bool | None,
    backend: str | None,
    output: str,
) -> None:
    """Start the sandbox in the background; returns once its API serves.

    The sandbox is a real Kubernetes control plane (kube-apiserver on kine,
    kube-controller-manager, kube-scheduler) with a node agent in the
    kubelet's role and simulated Argo CD and External Secrets; apply Argo CD
    and the root app to it and the platform comes up, its Vault pods being
    real OpenBao processes.
    """
    app.load()
    target = Path(directory)
    mapping = {}
    for entry in repos:
        url, sep, path = entry.partition("=")
        if not sep or not url or not path:
            raise errors.ConfigError(f"--repo takes URL=DIR, not {entry!r}")
        mapping[url] = path
    if api_latency_ms is not None or api_error_rate is not None or drop_watches is not None:
        sandbox_process.set_faults(
            target, api_latency_ms=api_latency_ms, api_error_rate=api_error_rate, drop_watches=drop_watches
        )
    info = sandbox_process.up(target, repos=mapping, pod_ready_seconds=pod_ready_seconds, backend=backend)
    config_path = target.resolve() / "dr.yaml"
    text = (
        f"sandbox up: {info.url} (pid {info.pid}, {info.backend} control plane)\n"
        f"kubeconfig: {info.kubeconfig}\nconfig: {config_path}"
    )
    _emit(info.to_dict(), text, output)


@sandbox_group.command("status")
@sandbox_dir_option
@output_option
@click.pass_context
def sandbox_status_cmd(ctx: click.Context, directory: str, output: str) -> None:
    """Whether the sandbox runs and serves; exit 1 when it does not."""
    ctx.obj.load()
    info = sandbox_process.status(Path(directory))
    state = "serving" if info.healthy else ("running, not serving" if info.running else "not running")
    _emit(info.to_dict(), f"sandbox {info.directory}: {state}" + (f" at {info.url}" if info.url else ""), output)
    ctx.exit(errors.EXIT_OK if info.healthy else errors.EXIT_FAILED)


@sandbox_group.command("faults")
@sandbox_dir_option
@click.option("--api-latency-ms", type=click.IntRange(min=0), default=None, help="Delay every API request.")
@click.option("--api-error-rate", type=click.FloatRange(0, 1), default=None, help="Share of 500/503/429 answers.")
@click.option("--drop-watches/--keep-watches", default=None, help="End every watch after about a second.")
@click.option("--fail-workload", "fail", multiple=True, metavar="NS/NAME", help="Make a workload's pods crash-loop.")
@click.option("--heal-workload", "heal", multiple=True, metavar="NS/NAME", help="Stop a workload failing.")
@click.option("--eso-failing/--eso-working", default=None, help="Cut External Secrets off from Vault, or stop that.")
@click.option("--kill-pod", "kill", multiple=True, metavar="NS/POD", help="SIGKILL a Vault or ESO pod's process.")
@click.option("--restart-pod", "restart", multiple=True, metavar="NS/POD", help="Restart a Vault or ESO pod's process.")
@click.pass_obj
def sandbox_faults_cmd(
    app: App,
    directory: str,
    api_latency_ms: int | None,
    api_error_rate: float | None,
    drop_watches: bool | None,
    fail: tuple[str, ...],
    heal: tuple[str, ...],
    eso_failing: bool | None,
    kill: tuple[str, ...],
    restart: tuple[str, ...],
) -> None:
    """Change the fault knobs of a running (or future) sandbox, or crash its Vault and ESO pods."""
    app.load()
    knobs = sandbox_process.set_faults(
        Path(directory),
        api_latency_ms=api_latency_ms,
        api_error_rate=api_error_rate,
        drop_watches=drop_watches,
        fail=fail,
        heal=heal,
        eso_failing=eso_failing,
    )
    for pod in kill:
        sandbox_process.pod_fault(Path(directory), pod, kill=True)
        click.echo(f"killed {pod}'s process; the pod restarts it (a Vault pod comes back sealed)")
    for pod in restart:
        sandbox_process.pod_fault(Path(directory), pod, kill=False)
        click.echo(f"restarted {pod}'s process (a Vault pod comes back sealed)")
    click.echo("faults: " + ", ".join(f"{k}={v}" for k, v in sorted(knobs.items())))


@sandbox_group.command("down")
@sandbox_dir_option
@click.pass_obj
def sandbox_down_cmd(app: App, directory: str) -> None:
    """Stop the sandbox and everything it started; safe to run twice, and after a crash."""
    app.load()
    stopped = sandbox_process.down(Path(directory))
    click.echo(f"sandbox down ({len(stopped)} process(es) stopped); its state stays in {directory}")


_accept_global_options_everywhere(cli)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="dr")
