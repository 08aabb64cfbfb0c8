"""TLS is verified by default: a Vault with a private CA fails clearly without it and works with it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from dr import cli
from dr.adapters import certs as tls
from dr.adapters import localbao as bao
from dr.adapters import vault
from tests.harness_vault import remember, wait_active


def test_private_ca_is_required_and_honoured(make_bao: Callable[..., bao.BaoCluster], tmp_path: Path) -> None:
    """Without the CA: unreachable with 'TLS verification failed' (exit 1); with VAULT_CACERT: healthy (exit 0)."""
    ca = tls.CertificateAuthority(tmp_path / "ca")
    procs = make_bao(1, tls=ca)
    address = procs.addresses[0]
    assert address.startswith("https://")

    result = CliRunner().invoke(cli.cli, ["vault", "status", "--address", address, "-o", "json"])
    assert 1 == result.exit_code
    node = json.loads(result.stdout)["nodes"][0]
    assert "unreachable" == node["role"]
    assert "TLS verification failed" in node["error"]
    assert "VAULT_CACERT" in node["error"]

    secured = vault.VaultNode(address, ca_cert=str(ca.cert_path))
    init = secured.init(1, 1)
    remember(init.root_token, *init.shares)
    secured.unseal(init.shares)
    wait_active(secured)
    env = {"VAULT_CACERT": str(ca.cert_path), "VAULT_TOKEN": init.root_token.reveal()}
    ok = CliRunner().invoke(cli.cli, ["vault", "status", "--address", address, "-o", "json"], env=env)
    assert 0 == ok.exit_code, ok.output
    assert json.loads(ok.stdout)["healthy"] is True
