"""TLS is verified by default: a Vault with a private CA fails clearly without it and works with it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from dr import cli
from dr.adapters import certs as tls
from dr.adapters import localbao as bao
from dr.adapters import vault
from tests.harness_vault import Original, remember, wait_active


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


def test_the_bao_clis_tls_variables_are_honoured(make_bao: Callable[..., bao.BaoCluster], tmp_path: Path) -> None:
    """VAULT_CAPATH (a directory of hashed certificates), BAO_SKIP_VERIFY (verification off, with a warning),
    and a SKIP_VERIFY that is not a boolean refused with exit 2, as the bao CLI does."""
    ca = tls.CertificateAuthority(tmp_path / "ca")
    address = make_bao(1, tls=ca).addresses[0]
    capath = tmp_path / "capath"
    capath.mkdir()
    subject_hash = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(ca.cert_path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    (capath / f"{subject_hash}.0").symlink_to(ca.cert_path)

    def role(env: dict[str, str]) -> str:
        result = CliRunner().invoke(cli.cli, ["vault", "status", "--address", address, "-o", "json"], env=env)
        return str(json.loads(result.stdout)["nodes"][0]["role"])

    assert "unreachable" == role({})
    assert "uninitialized" == role({"VAULT_CAPATH": str(capath)})
    assert "uninitialized" == role({"BAO_SKIP_VERIFY": "true"})
    assert "unreachable" == role({"VAULT_SKIP_VERIFY": "false"})
    refused = CliRunner().invoke(cli.cli, ["vault", "status", "--address", address], env={"VAULT_SKIP_VERIFY": "maybe"})
    assert 2 == refused.exit_code
    assert "VAULT_SKIP_VERIFY='maybe' is not a boolean" in refused.output


def test_bao_namespace_sends_every_call_to_that_namespace(original: Original, monkeypatch: pytest.MonkeyPatch) -> None:
    """BAO_NAMESPACE (or VAULT_NAMESPACE) is the namespace of every call, as in the bao CLI."""
    admin = vault.VaultNode(original.procs.addresses[0], token=original.token)
    if admin.read("sys/namespaces/dr-team") is None:
        admin.write("sys/namespaces/dr-team", {})
    assert "kv" in admin.mounted("mounts")
    for variable in ("BAO_NAMESPACE", "VAULT_NAMESPACE"):
        monkeypatch.setenv(variable, "dr-team")
        inside = vault.VaultNode(original.procs.addresses[0], token=original.token).mounted("mounts")
        assert "kv" not in inside
        assert "sys" in inside
        monkeypatch.delenv(variable)
