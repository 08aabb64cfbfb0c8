"""`dr vault status` and `dr vault unseal` against the real cluster A."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dr import cli
from tests.harness_vault import KNOWN_SECRETS, Original


def dr(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli.cli, ["--log-format", "json", *args], env=env)
    for value in KNOWN_SECRETS:
        assert value not in result.output, "a share or token reached the CLI output"
    return result


def addresses(original: Original) -> list[str]:
    return [a for address in original.procs.addresses for a in ("--address", address)]


def key_files(original: Original, tmp_path: Path, count: int = 3, mode: int = 0o600) -> list[str]:
    args = []
    for n, share in enumerate(original.shares[:count]):
        path = tmp_path / f"share-{n}"
        path.write_text(share.reveal() + "\n")
        path.chmod(mode)
        args += ["--key-file", str(path)]
    return args


def test_status_of_a_healthy_cluster_is_exit_0_with_every_node(original: Original) -> None:
    """All unsealed, token given: exit 0; JSON lists three nodes, one active, peers, autopilot healthy."""
    result = dr("vault", "status", *addresses(original), "-o", "json", env={"VAULT_TOKEN": original.token.reveal()})
    assert 0 == result.exit_code, result.output
    data = json.loads(result.stdout)
    assert (True, 3) == (data["healthy"], len(data["nodes"]))
    assert ["active", "standby", "standby"] == sorted(n["role"] for n in data["nodes"])
    node = data["nodes"][0]
    for key in ("address", "initialized", "sealed", "threshold", "shares", "progress", "version"):
        assert key in node
    assert 3 == len(data["raft_peers"])
    assert data["autopilot"]["healthy"] is True
    text = dr("vault", "status", *addresses(original), env={"BAO_TOKEN": original.token.reveal()}).stdout
    assert "cluster: healthy" in text
    assert "autopilot: healthy, failure tolerance 1" in text


def test_status_without_a_token_says_what_it_did_not_check(original: Original) -> None:
    """No token: seal and HA state are still shown; the output says Raft and autopilot were not read."""
    result = dr("vault", "status", *addresses(original), env={"VAULT_TOKEN": "", "BAO_TOKEN": ""})
    assert "autopilot: not checked (no token)" in result.stdout


def test_a_sealed_node_fails_status_and_unseal_brings_it_back(original: Original, tmp_path: Path) -> None:
    """Restart one node (sealed): status exits 1 naming it; `dr vault unseal --address … --key-file …` fixes it."""
    original.procs.restart(2)
    sealed = original.procs.addresses[2]
    try:
        result = dr("vault", "status", *addresses(original), env={"VAULT_TOKEN": original.token.reveal()})
        assert 1 == result.exit_code
        assert f"- {sealed}: sealed" in result.stdout
        unsealed = dr("vault", "unseal", "--address", sealed, *key_files(original, tmp_path), "-o", "json")
        assert 0 == unsealed.exit_code, unsealed.output
        assert [{"address": sealed, "sealed": False, "t": 3, "n": 5}] == json.loads(unsealed.stdout)["nodes"]
    finally:
        original.cluster.nodes[2].unseal(original.shares[:3])
        original.cluster.await_healthy(timeout=60)


def test_bao_addr_wins_over_vault_addr(original: Original) -> None:
    """With no addresses configured, BAO_ADDR is used before VAULT_ADDR (OpenBao's convention)."""
    env = {"BAO_ADDR": original.procs.addresses[1], "VAULT_ADDR": "http://127.0.0.1:9", "VAULT_TOKEN": ""}
    data = json.loads(dr("vault", "status", "-o", "json", env=env).stdout)
    assert [original.procs.addresses[1]] == [n["address"] for n in data["nodes"]]
    fallback = json.loads(dr("vault", "status", "-o", "json", env={"VAULT_ADDR": original.procs.addresses[0]}).stdout)
    assert [original.procs.addresses[0]] == [n["address"] for n in fallback["nodes"]]


def test_unreachable_node_is_reported_not_raised(original: Original) -> None:
    """A node address where nothing listens shows as unreachable and fails status (exit 1), no traceback."""
    result = dr("vault", "status", "--address", "http://127.0.0.1:9", "-o", "json")
    assert 1 == result.exit_code
    node = json.loads(result.stdout)["nodes"][0]
    assert ("unreachable", True) == (node["role"], "cannot connect" in node["error"])


def test_key_file_readable_by_others_is_refused(original: Original, tmp_path: Path) -> None:
    """A 0644 key file is refused (exit 2) with the chmod to run, before any share is sent."""
    original.procs.restart(1)
    try:
        result = dr(
            "vault", "unseal", "--address", original.procs.addresses[1], *key_files(original, tmp_path, mode=0o644)
        )
        assert 2 == result.exit_code
        assert "is readable by group or others (mode 0644)" in result.stderr
        assert "chmod 600" in result.stderr
        assert 0 == original.cluster.nodes[1].seal_status().progress
    finally:
        original.cluster.nodes[1].unseal(original.shares[:3])
        original.cluster.await_healthy(timeout=60)


def test_no_address_and_no_key_source_are_clear_errors(tmp_path: Path) -> None:
    """Without any address: exit 2 naming the variables; unseal without a key source: exit 2 naming the options."""
    env = {"VAULT_ADDR": "", "BAO_ADDR": ""}
    result = dr("vault", "status", env=env)
    assert (2, True) == (result.exit_code, "set VAULT_ADDR (or BAO_ADDR)" in result.stderr)
    result = dr("vault", "unseal", "--address", "http://127.0.0.1:9", env=env)
    assert 2 == result.exit_code
    assert "pass --key-file (repeatable), or set keys.source" in result.stderr


@pytest.mark.parametrize("var", ["VAULT_TOKEN", "BAO_TOKEN"])
def test_token_from_the_environment_never_reaches_argv_or_output(original: Original, var: str) -> None:
    """The token is read from the environment (never a flag), and the output does not show it."""
    result = dr("vault", "status", *addresses(original), env={var: original.token.reveal()})
    assert 0 == result.exit_code
    assert original.token.reveal() not in result.output
    # There is no option to pass a token on the command line, where /proc/<pid>/cmdline would show it.
    assert "token" not in dr("vault", "status", "--help").stdout.lower()
