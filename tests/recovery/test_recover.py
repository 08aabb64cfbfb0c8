"""`dr recover` on the sandbox today: the shared steps run for real, then it stops loudly at recovery-only work."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dr import cli
from dr.adapters import sandbox_process
from tests.recovery.test_bootstrap import write_config


def test_recover_runs_the_shared_steps_then_stops_at_the_unbuilt_unseal(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    try:
        result = CliRunner().invoke(
            cli.cli, ["--config", str(config), "--log-format", "console", "recover", "--cluster", "new", "-o", "json"]
        )
        assert 1 == result.exit_code
        assert "error: step vault-unseal is not implemented yet" in result.stderr
        assert "runbook: runbooks/vault-unseal.md" in result.stderr
        states = {n: s["state"] for n, s in json.loads(result.stdout)["steps"].items()}
        assert {"cluster": "succeeded", "root-app": "succeeded", "argo-sync": "succeeded"}.items() <= states.items()
        assert "failed" == states["vault-unseal"]
        assert {"pending"} == {states[n] for n in ("raft-restore", "eso-sync", "app-health")}
    finally:
        sandbox_process.down(tmp_path / "state" / "sandbox")
