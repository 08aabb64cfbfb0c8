"""`dr recover --cluster new --provider sandbox`: bootstrap, canary, snapshot, destroy, recover, verify."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import hvac
import kubernetes
import yaml
from click.testing import CliRunner, Result

from dr import cli, secret
from dr.adapters import sandbox_process, vault
from tests.harness_vault import remember
from tests.recovery.test_bootstrap import vault_addresses, write_config

CANARY = "dr/canary"


def dr(config: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.cli, ["--config", str(config), *args], env=env)


def kv(addresses: list[str], token: secret.Secret) -> Any:
    return hvac.Client(url=vault.VaultCluster(addresses).active().address, token=token.reveal()).secrets.kv.v2


def test_a_destroyed_platform_comes_back_from_its_snapshot_with_every_secret(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    store = tmp_path / "store"
    first = write_config(old, snapshots={"store": str(store), "min_age": "1s"})
    try:
        built = dr(first, "bootstrap")
        assert 0 == built.exit_code, built.output
        keys_dir = old / "state" / "keys"
        token = secret.Secret((keys_dir / "root-token").read_text().strip())
        remember(token, *(secret.Secret(p.read_text().strip()) for p in keys_dir.glob("share-*")))
        client = kubernetes.config.new_client_from_config(str(old / "state" / "sandbox" / "kubeconfig"))
        addresses = vault_addresses(client)
        kv(addresses, token).create_or_update_secret(
            path=CANARY, secret={"v": "from-the-old-cluster"}, mount_point="secret"
        )
        demo = kv(addresses, token).read_secret_version(
            path="workloads/demo-app", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]["api_key"]
        saver = write_config(old, snapshots={"store": str(store), "min_age": "1s"}, vault={"addresses": addresses})
        saved = dr(saver, "snapshot", "save", env={"VAULT_TOKEN": token.reveal()})
        assert 0 == saved.exit_code, saved.output
    finally:
        sandbox_process.down(old / "state" / "sandbox")
    shutil.rmtree(old / "state" / "sandbox")  # the cluster is gone; its keys and snapshots are not

    shares = sorted(str(p) for p in keys_dir.glob("share-*"))[:3]
    recovery = write_config(
        new,
        snapshots={"store": str(store), "canary_path": f"secret/data/{CANARY}"},
        keys={"source": "files", "files": shares, "token_file": str(keys_dir / "root-token")},
    )
    try:
        result = dr(recovery, "recover", "--cluster", "new", "-o", "json")
        assert 0 == result.exit_code, result.output
        run = json.loads(result.stdout)
        states = {name: s["state"] for name, s in run["steps"].items()}
        assert 8 == len(states)
        assert {"succeeded", "skipped"} >= set(states.values())
        assert "succeeded" == states["raft-restore"]
        client = kubernetes.config.new_client_from_config(str(new / "state" / "sandbox" / "kubeconfig"))
        restored = kv(vault_addresses(client), token)  # the ORIGINAL root token works: the token store came back
        assert (
            "from-the-old-cluster"
            == restored.read_secret_version(path=CANARY, mount_point="secret", raise_on_deleted_version=True)["data"][
                "data"
            ]["v"]
        )
        synced = kubernetes.client.CoreV1Api(client).read_namespaced_secret("demo-app-secret", "workloads").data
        assert demo == base64.b64decode(synced["api_key"]).decode()  # ESO copied the restored value, not a new one
        assert not list((new / "state" / "runs").rglob("throwaway-init"))  # the throwaway init material is gone
        (downloaded,) = (new / "state" / "snapshots").glob("*.snap")
        assert 0o600 == downloaded.stat().st_mode & 0o777
        again = dr(recovery, "recover", "--cluster", "new", "-o", "json")
        assert 0 == again.exit_code, again.output
        assert {"skipped"} == {s["state"] for s in json.loads(again.stdout)["steps"].values()}, again.stdout
        assert yaml.safe_load((new / "state" / "sandbox" / "dr.yaml").read_text())["vault"]["addresses"]
    finally:
        sandbox_process.down(new / "state" / "sandbox")
