"""Configuration: file < environment < flags, and every bad config is exit 2 naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dr import cli, config, errors


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dr.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No dr.yaml and no DR_CONFIG: documented defaults."""
    monkeypatch.chdir(tmp_path)
    cfg = config.load(env={})
    assert (Path(".dr"), "auto", "platform", "sandbox") == (
        cfg.state_dir,
        cfg.log_format,
        cfg.cluster.name,
        cfg.cluster.provider,
    )
    assert cfg.source is None


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    """The same field set in all three layers takes the flag's value; env beats the file."""
    path = write(tmp_path, "state_dir: /from/file\ncluster:\n  provider: kind\n  name: file-name\n")
    cfg = config.load(
        path,
        env={"DR_STATE_DIR": "/from/env", "DR_PROVIDER": "k3s"},
        flags={"state_dir": ("--state-dir", "/from/flag"), "cluster.provider": ("--provider", None)},
    )
    assert (Path("/from/flag"), "k3s", "file-name") == (cfg.state_dir, cfg.cluster.provider, cfg.cluster.name)
    assert path == cfg.source


def test_dr_config_variable_selects_the_file(tmp_path: Path) -> None:
    """DR_CONFIG names the file when --config is not given."""
    path = write(tmp_path, "cluster:\n  name: from-env-file\n")
    assert "from-env-file" == config.load(env={"DR_CONFIG": str(path)}).cluster.name


def test_durations_accept_the_usual_spellings(tmp_path: Path) -> None:
    """Step timeouts take 90, 90s, 15m, 1h30m."""
    path = write(tmp_path, "steps:\n  cluster: {timeout: 1h30m, attempts: 2}\n  eso-sync: {timeout: 90}\n")
    cfg = config.load(path, env={})
    assert 5400.0 == cfg.steps["cluster"].timeout
    assert 90.0 == cfg.steps["eso-sync"].timeout


BAD = [
    ("unknown field", "state_dri: /x\n", "dr.yaml: field `state_dri`: unknown field"),
    ("unknown nested field", "cluster:\n  provder: kind\n", "field `cluster.provder`: unknown field"),
    ("wrong type", "cluster: [1, 2]\n", "field `cluster`: Input should be a valid dictionary"),
    ("bad choice", "cluster:\n  provider: eks\n", "field `cluster.provider`: Input should be 'sandbox'"),
    ("bad cluster name", "cluster:\n  name: Bad_Name\n", "field `cluster.name`: String should match pattern"),
    (
        "bad duration",
        "steps:\n  cluster:\n    timeout: soon\n",
        "field `steps.cluster.timeout`: Value error, 'soon' is not",
    ),
    ("zero duration", "steps:\n  cluster:\n    timeout: 0s\n", "greater than zero"),
    (
        "attempts not int",
        "steps:\n  cluster:\n    attempts: many\n",
        "field `steps.cluster.attempts`: Input should be a valid integer",
    ),
    ("bad yaml", "cluster:\n  name: [unclosed\n", "dr.yaml: invalid YAML at line 3, column 1"),
    ("tabs", "cluster:\n\tname: x\n", "invalid YAML at line 2"),
    ("not a mapping", "- a\n- b\n", "the top level must be a mapping of settings, not a list"),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_file_and_field(tmp_path: Path, case: str, text: str, message: str) -> None:
    """Each bad config raises ConfigError (exit 2) naming the file and the field."""
    path = write(tmp_path, text)
    with pytest.raises(errors.ConfigError) as info:
        config.load(path, env={})
    assert message in str(info.value)
    assert 2 == info.value.exit_code
    assert str(path) in str(info.value)


def test_missing_file_that_was_asked_for_is_an_error(tmp_path: Path) -> None:
    """--config pointing at nothing is an error, not silent defaults."""
    with pytest.raises(errors.ConfigError, match="config file not found"):
        config.load(tmp_path / "nope.yaml", env={})


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    """A bad value from an environment variable names the variable, not the file."""
    with pytest.raises(errors.ConfigError, match="environment variable DR_LOG_FORMAT: field `log_format`"):
        config.load(write(tmp_path, ""), env={"DR_LOG_FORMAT": "xml"})


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    """A file over the size cap is refused without being parsed."""
    path = write(tmp_path, "# " + "x" * config.MAX_FILE_BYTES + "\n")
    with pytest.raises(errors.ConfigError, match="a dr config is at most"):
        config.load(path, env={})


def test_unknown_step_in_config_is_refused_by_the_plan(tmp_path: Path) -> None:
    """A `steps:` entry that names no recovery step fails `dr plan` with exit 2, listing the real steps."""
    path = write(tmp_path, "steps:\n  vault-unsael:\n    attempts: 2\n")
    result = CliRunner().invoke(cli.cli, ["--config", str(path), "plan"])
    assert 2 == result.exit_code
    assert "field `steps.vault-unsael`: no such step; the steps are snapshot, cluster, root-app" in result.output


@pytest.mark.parametrize(("case", "text", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_through_the_cli_is_exit_2_without_traceback(
    tmp_path: Path, case: str, text: str, message: str
) -> None:
    """The CLI renders each bad config as error/hint/runbook lines and exits 2, never a traceback."""
    path = write(tmp_path, text)
    result = CliRunner().invoke(cli.cli, ["--config", str(path), "plan"])
    assert 2 == result.exit_code
    assert result.output.startswith("error: ")
    assert message in result.output
    assert "runbook: runbooks/README.md#configuration" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
