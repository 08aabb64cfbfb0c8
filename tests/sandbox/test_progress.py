"""Live progress: on a terminal, one redrawn line per running step saying what it waits for; through a pipe,
the structured log exactly as before. Both are a real `dr recover` against the real API server, whose cluster
has no Ready node, so that the cluster step waits (and times out after the 6 s the config gives it) while the
snapshot step runs beside it."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dr import cli
from dr.sandbox import backends
from tests.harness_vault import Original


@pytest.fixture
def config(original: Original, real_api: backends.Real, tmp_path: Path) -> Path:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(real_api.kubeconfig))
    kubeconfig.chmod(0o600)
    saver = tmp_path / "save.yaml"
    settings = {"cluster": {"name": "prod"}, "snapshots": {"store": str(tmp_path / "store")}}
    saver.write_text(yaml.safe_dump({**settings, "vault": {"addresses": original.procs.addresses}}))
    saved = CliRunner().invoke(
        cli.cli, ["--config", str(saver), "snapshot", "save"], env={"VAULT_TOKEN": original.token.reveal()}
    )
    assert 0 == saved.exit_code, saved.output
    path = tmp_path / "dr.yaml"
    settings["cluster"] = {"name": "prod", "provider": "kubeconfig", "kubeconfig": str(kubeconfig)}
    path.write_text(
        yaml.safe_dump({**settings, "state_dir": str(tmp_path / "state"), "steps": {"cluster": {"timeout": "6s"}}})
    )
    return path


ARGV = ["-m", "dr", "recover", "--cluster", "existing", "--skip-preflight"]


def _in_a_terminal(argv: list[str], env: dict[str, str], timeout: float = 90) -> tuple[int, str]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: dr, with the pty as its terminal
        os.execve(sys.executable, [sys.executable, *argv], env)  # noqa: S606 - our own interpreter, no shell wanted
    seen = bytearray()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def test_a_terminal_gets_a_live_line_per_running_step_and_a_pipe_the_log(config: Path) -> None:
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40", "DR_CONFIG": str(config)}
    env.pop("NO_COLOR", None)
    code, screen = _in_a_terminal(ARGV, env)
    assert 1 == code, screen
    assert "waiting for every node to be Ready" in screen  # the cluster step's live line
    assert "✓ snapshot succeeded in" in screen  # the parallel branch, done while the cluster step waits
    assert "✗ cluster failed in" in screen
    assert "\x1b[2K" in screen  # redrawn in place: rich erasing the live lines to draw them again
    assert "timed out" in screen  # the error, as ever
    # What the live lines show is not logged twice on the terminal: the `waiting` events, a step's start and
    # success (its ✓ line says it); a failure is logged as ever.
    assert "elapsed=" not in screen
    assert "step_started" not in screen
    assert "step_succeeded" not in screen
    assert "step_failed" in screen

    piped = subprocess.run([sys.executable, *ARGV], env=env, capture_output=True, text=True, timeout=90, check=False)
    assert 1 == piped.returncode, piped.stderr
    events = [json.loads(line) for line in piped.stderr.splitlines() if line.startswith("{")]
    waits = [e for e in events if e["event"] == "waiting"]
    assert waits, piped.stderr  # the structured log as before: the 5 s progress event
    assert "every node to be Ready" == waits[0]["what"]
    assert "\x1b[" not in piped.stderr
