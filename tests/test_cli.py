"""The CLI through click's CliRunner: names, exit codes, JSON output, no tracebacks."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner, Result

from dr import __version__, cli, errors
from dr.adapters import providers
from dr.recovery import steps

SEVEN = ["cluster", "root-app", "argo-sync", "vault-unseal", "raft-restore", "eso-sync", "app-health"]
PLAN = ["snapshot", *SEVEN]  # the snapshot branch downloads beside cluster … argo-sync


def dr(*args: str) -> Result:
    return CliRunner().invoke(cli.cli, list(args))


def test_version_and_help() -> None:
    """--version prints the version; --help lists the commands."""
    assert f"dr, version {__version__}\n" == dr("--version").output
    result = dr("--help")
    assert 0 == result.exit_code
    for command in ("plan", "recover", "status", "runs"):
        assert command in result.output


def test_python_dash_m_runs_the_same_cli() -> None:
    """`python -m dr --version` works like the console script."""
    out = subprocess.run([sys.executable, "-m", "dr", "--version"], capture_output=True, text=True, check=True)
    assert f"dr, version {__version__}" == out.stdout.strip()


CLIENTS = ("kubernetes", "hvac", "boto3", "botocore", "requests")  # and dr.sandbox


def _loaded_after(code: str, *argv: str) -> set[str]:
    """The client libraries a fresh interpreter holds after `code` (with `sys.argv` = argv)."""
    probe = (
        f"import sys; sys.argv = {['dr', *argv]!r}\n{code}\n"
        f"import json; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {CLIENTS!r}"
        " or m.startswith('dr.sandbox'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_cli_imports_no_client_library_until_a_command_needs_it(tmp_path: Path) -> None:
    """`import dr.cli`, `dr plan` and `dr snapshot list` on a file store start without kubernetes, hvac or boto3.

    They are half a second of imports on two cores (scripts/bench_cli.py); `dr vault status` must load hvac.
    """
    assert set() == _loaded_after("import dr.cli")
    run = "from dr.cli import main\ntry:\n    main()\nexcept SystemExit as done:\n    assert not done.code, done.code"
    assert set() == _loaded_after(run, "plan")
    assert set() == _loaded_after(run, "snapshot", "list", "--store", str(tmp_path))
    status = run.replace("assert not done.code, done.code", "pass")  # nothing answers: it exits 1, hvac loaded
    assert "hvac" in _loaded_after(status, "vault", "status", "--address", "http://127.0.0.1:9")


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{missing}", "snapshot", "list"],
        ["snapshot", "--config", "{missing}", "list"],
        ["snapshot", "list", "--config", "{missing}"],
        ["plan", "--config", "{missing}"],
        ["vault", "status", "--config", "{missing}"],
    ],
)
def test_global_options_work_before_and_after_the_command(argv: list[str], tmp_path: Path) -> None:
    """As kubectl's and bao's flags do: `dr snapshot list --config F` reads F, as `dr --config F snapshot list`."""
    missing = str(tmp_path / "nowhere.yaml")
    result = dr(*(a.replace("{missing}", missing) for a in argv))
    assert 2 == result.exit_code, result.output
    assert f"{missing}: config file not found" in result.output


@pytest.mark.parametrize("where", ["before", "after"])
def test_log_format_after_the_command_renders_errors_as_json(where: str, tmp_path: Path) -> None:
    flag = ["--log-format", "json"]
    command = ["status", "--state-dir", str(tmp_path / "none")]
    result = dr(*(flag + command if where == "before" else command + flag))
    assert 2 == result.exit_code
    assert "command_failed" == json.loads(result.output.strip().splitlines()[-1])["event"]


def test_every_command_shows_the_global_options_in_its_help() -> None:
    def walk(group: click.Group, path: list[str]) -> Iterator[list[str]]:
        for name, command in group.commands.items():
            yield [*path, name]
            if isinstance(command, click.Group):
                yield from walk(command, [*path, name])

    for path in walk(cli.cli, []):
        shown = dr(*path, "--help").output
        assert all(flag in shown for flag in ("--config", "--log-format", "--verbose")), path


def test_recover_and_bootstrap_take_the_kubeconfig_and_context_as_kubectl_does(tmp_path: Path) -> None:
    """--kubeconfig and --context reach the cluster step (cluster.kubeconfig / cluster.context)."""
    missing = tmp_path / "elsewhere" / "kubeconfig"
    state = ["--state-dir", str(tmp_path / "state"), "--provider", "kubeconfig", "--kubeconfig", str(missing)]
    for argv in (["recover", "--cluster", "existing", *state, "--context", "prod"], ["bootstrap", *state]):
        result = dr(*argv)
        assert result.exit_code in (errors.EXIT_FAILED, errors.EXIT_CONFIG), result.output
        assert f"{missing}: kubeconfig not found" in result.output
        assert "--kubeconfig" in result.output  # the hint names the flag


def test_kubeconfig_env_is_read_as_kubectl_reads_it_one_file_or_a_list(tmp_path: Path) -> None:
    """KUBECONFIG names one file or a list; the files of a list that do not exist are skipped, as kubectl skips
    them, and a list of none that exist is refused. (The merge itself: tests/sandbox/test_kube_adapter.py.)"""
    state = ["--state-dir", str(tmp_path / "state"), "--provider", "kubeconfig"]
    missing = tmp_path / "from-env"
    one = CliRunner().invoke(cli.cli, ["bootstrap", *state], env={"KUBECONFIG": str(missing)})
    assert f"{missing}: kubeconfig not found" in one.output
    two = CliRunner().invoke(cli.cli, ["bootstrap", *state], env={"KUBECONFIG": f"{missing}:{missing}-2"})
    assert errors.EXIT_CONFIG == two.exit_code, two.output
    assert f"{missing}:{missing}-2: kubeconfig not found" in two.output
    assert providers.kubeconfig_files(Path(f"{missing}:{tmp_path}")) == []  # a directory is not a kubeconfig
    (tmp_path / "b").write_text("{}")
    assert providers.kubeconfig_files(Path(f"{missing}:{tmp_path / 'b'}")) == [tmp_path / "b"]


def test_yaml_output_is_the_json_document_as_yaml() -> None:
    as_json, as_yaml = dr("plan", "-o", "json"), dr("plan", "-o", "yaml")
    assert 0 == as_yaml.exit_code, as_yaml.output
    assert json.loads(as_json.output) == yaml.safe_load(as_yaml.output)


def test_plan_lists_the_seven_steps_in_order_and_the_snapshot_branch() -> None:
    """`dr plan -o json`: the seven stable names each requiring the one before; raft-restore also the snapshot."""
    data = json.loads(dr("plan", "--output", "json").output)
    assert PLAN == [s["name"] for s in data["steps"]]
    assert PLAN == list(steps.NAMES)
    requires = {s["name"]: s["requires"] for s in data["steps"]}
    assert {"snapshot": [], "cluster": []}.items() <= requires.items()
    for before, after in itertools.pairwise(SEVEN):
        assert before in requires[after]
    assert ["vault-unseal", "snapshot"] == requires["raft-restore"]
    assert all(s["end_state"] and s["runbook"] == f"runbooks/{s['name']}.md" for s in data["steps"])
    text = dr("plan").output
    assert "raft-restore  vault-unseal" in text


def test_every_step_has_a_runbook() -> None:
    """runbooks/<step>.md exists for each step, with the three sections operators rely on."""
    root = Path(__file__).resolve().parents[1] / "runbooks"
    for name in PLAN:
        text = (root / f"{name}.md").read_text()
        for section in ("## What it does", "## See its state by hand", "## Finish it by hand"):
            assert section in text, f"{name}.md lacks {section}"
    index = (root / "README.md").read_text()
    assert [index.index(f"{n}.md") for n in SEVEN] == sorted(index.index(f"{n}.md") for n in SEVEN)


def test_recover_needs_a_cluster_mode() -> None:
    """`dr recover` with neither --cluster nor --resume is a usage error (exit 2)."""
    result = dr("recover")
    assert 2 == result.exit_code
    assert "give --cluster new|existing" in result.output


def test_cluster_mode_and_provider_must_agree(tmp_path: Path) -> None:
    """--cluster new with the kubeconfig provider, and existing with a creating one, are exit 2."""
    for args, message in (
        (["--cluster", "new", "--provider", "kubeconfig"], "--cluster new needs a provider"),
        (["--cluster", "existing", "--provider", "kind"], "--cluster existing targets"),
    ):
        result = dr("recover", *args, "--state-dir", str(tmp_path / "s"))
        assert 2 == result.exit_code
        assert message in result.output
        assert not (tmp_path / "s" / "lock").exists()


def test_dry_run_changes_nothing() -> None:
    """--dry-run prints the seven steps it would run and creates no state dir."""
    result = dr("recover", "--cluster", "new", "--dry-run")
    assert 0 == result.exit_code
    for name in SEVEN:
        assert name in result.output
    assert "provider=sandbox" in result.output
    assert not Path(".dr").exists()


@pytest.fixture
def no_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH without kind or docker: a kind recovery fails in its first step, fast, on any machine."""
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_a_failed_step_is_loud_and_leaves_a_resumable_checkpoint(no_tools: None) -> None:
    """A recovery with no snapshot and no kind: both branches fail, each named; exit 1, a resumable checkpoint."""
    result = dr("--log-format", "console", "recover", "--cluster", "new", "--provider", "kind", "--skip-preflight")
    assert 1 == result.exit_code
    # The error shown is the earliest step's in plan order (the snapshot branch); the table names both.
    assert "error: no good snapshot for cluster platform" in result.stderr
    assert "the `kind` command is not installed (needed for provider kind)" in result.stdout
    assert "runbook: runbooks/raft-restore.md" in result.stderr
    assert "resume with: dr recover --resume " in result.stderr
    assert 0o700 == Path(".dr").stat().st_mode & 0o777
    runs = json.loads(dr("runs", "-o", "json").output)["runs"]
    assert [("recover", "failed", ["snapshot", "cluster"])] == [
        (r["plan"], r["status"], r["failed_steps"]) for r in runs
    ]
    run_id = runs[0]["run_id"]
    status = json.loads(dr("status", "-o", "json").output)
    assert (run_id, False) == (status["run_id"], status["live"])
    assert ["failed", "failed"] + ["pending"] * 6 == [status["steps"][n]["state"] for n in PLAN]
    assert "ConfigError" == status["steps"]["cluster"]["error"]["type"]
    preview = dr("recover", "--resume", run_id, "--dry-run").output
    assert "re-enter through check()" in preview


def test_a_new_recovery_is_checked_first_and_starts_nothing_when_a_check_fails(no_tools: None) -> None:
    """The preflight: no kind, no key source, no snapshot: the doctor's table, exit 2 (the first finding is a
    configuration mistake), and no run, no state dir written."""
    result = dr("--log-format", "console", "recover", "--cluster", "new", "--provider", "kind")
    assert errors.EXIT_CONFIG == result.exit_code, result.output
    assert "provider     FAIL    the `kind` command is not installed" in result.stderr
    assert "keys         FAIL    no key source" in result.stderr
    assert "store        FAIL    " in result.stderr
    assert "preflight: 3 check(s) failed (provider, keys, store); nothing was started" in result.stderr
    assert "--skip-preflight" in result.stderr
    assert not Path(".dr", "runs").exists()
    doctor = dr("doctor", "--provider", "kind", "-o", "json")
    assert errors.EXIT_FAILED == doctor.exit_code  # the doctor's own verdict: not ready
    assert ["fail", "skip", "skip", "fail", "fail"] == [c["status"] for c in json.loads(doctor.stdout)["checks"]]


def test_resume_with_another_provider_is_refused(no_tools: None) -> None:
    """Resuming a run with a different --provider than it started with is exit 2."""
    dr("recover", "--cluster", "new", "--provider", "kind", "--skip-preflight")
    run_id = json.loads(dr("runs", "-o", "json").output)["runs"][0]["run_id"]
    result = dr("recover", "--resume", run_id, "--provider", "sandbox")
    assert 2 == result.exit_code
    assert "started with provider='kind', not 'sandbox'" in result.output


def test_status_errors_are_clear() -> None:
    """status with no runs, or an unknown id, is exit 2 with a hint; never a traceback."""
    empty = dr("status")
    assert (2, True) == (empty.exit_code, "no runs in state dir" in empty.output)
    unknown = dr("status", "20990101T000000Z-abcdef")
    assert 2 == unknown.exit_code
    assert "list run ids with `dr runs`" in unknown.output


def test_json_log_format_gives_json_lines(no_tools: None) -> None:
    """--log-format json: every stderr line is a JSON object, including the final error."""
    result = dr("--log-format", "json", "recover", "--cluster", "new", "--provider", "kind", "--skip-preflight")
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    events = [e["event"] for e in lines]
    # The snapshot branch and the cluster step run side by side: their events interleave in any order.
    assert "run_started" == events[0]
    assert ["run_finished", "command_failed"] == events[-2:]
    assert ["step_failed", "step_failed", "step_started", "step_started"] == sorted(events[1:-2])
    assert lines[-1]["resume"].startswith("dr recover --resume ")
    assert all(e.get("timestamp", "x").endswith("Z") for e in lines[:-1])


def test_state_dir_from_environment(no_tools: None) -> None:
    """DR_STATE_DIR chooses the state dir when --state-dir is absent."""
    result = CliRunner().invoke(
        cli.cli,
        ["recover", "--cluster", "new", "--provider", "kind", "--skip-preflight"],
        env={"DR_STATE_DIR": "elsewhere"},
    )
    assert 1 == result.exit_code
    assert Path("elsewhere/runs").is_dir()
    assert not Path(".dr").exists()
