"""`dr snapshot save/list/show/verify/prune` against the real cluster A, into a directory and into S3 (versitygw)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import hvac
import pytest
import yaml
from click.testing import CliRunner, Result

from dr import cli
from dr.adapters import localbao as bao
from tests.harness_vault import CANARY, KNOWN_SECRETS, Original, init_and_unseal, remember

REPO = Path(__file__).resolve().parents[2]


class Setup:
    """A dr.yaml for cluster A plus helpers to run the CLI with it."""

    def __init__(
        self,
        tmp: Path,
        original: Original,
        store: str,
        *,
        endpoint: str | None = None,
        addresses: list[str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        self.tmp = tmp
        self.original = original
        self.s3_root: Path | None = None  # the S3 server's data directory, for tests that damage a stored object
        share_files = []
        for n, share in enumerate(original.shares[:3]):
            path = tmp / f"share-{n}"
            path.write_text(share.reveal())
            path.chmod(0o600)
            share_files.append(str(path))
        self.metrics = tmp / "dr_snapshot.prom"
        snapshots: dict[str, object] = {
            "store": store,
            "canary_path": f"kv/data/{CANARY}",
            "metrics_textfile": str(self.metrics),
            "min_age": "1s",
        }
        if endpoint:
            snapshots["s3_endpoint"] = endpoint
        config = {
            "cluster": {"name": "prod"},
            "vault": {"addresses": addresses or original.procs.addresses},
            "keys": {"source": "files", "files": share_files},
            "snapshots": snapshots,
            **(extra or {}),
        }
        self.config = tmp / "dr.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.env = {"VAULT_TOKEN": original.token.reveal(), "DR_CONFIG": str(self.config)}

    def dr(self, *args: str, env: dict[str, str] | None = None) -> Result:
        result = CliRunner().invoke(cli.cli, ["--log-format", "json", *args], env={**self.env, **(env or {})})
        for value in KNOWN_SECRETS:
            assert value not in result.output, "a share or token reached the CLI output"
        return result

    def listed(self) -> dict[str, object]:
        result = self.dr("snapshot", "list", "-o", "json")
        assert 0 == result.exit_code, result.output
        return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture(params=["file", "s3"])
def setup(request: pytest.FixtureRequest, tmp_path: Path, original: Original) -> Setup:
    if request.param == "file":
        return Setup(tmp_path, original, str(tmp_path / "store"))
    endpoint = request.getfixturevalue("s3_env")
    bucket = f"dr-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    setup = Setup(tmp_path, original, f"s3://{bucket}/vault", endpoint=endpoint)
    setup.s3_root = request.getfixturevalue("s3_server").root
    return setup


def stored_path(setup: Setup, key: str) -> Path:
    """Where the store keeps `key` on disk: its directory, or the S3 server's (versitygw's posix backend)."""
    store = yaml.safe_load(setup.config.read_text())["snapshots"]["store"]
    if store.startswith("s3://"):
        assert setup.s3_root is not None
        return setup.s3_root / store[5:] / key
    return Path(store) / key


def stored_bytes(setup: Setup, key: str) -> bytes:
    config = yaml.safe_load(setup.config.read_text())["snapshots"]
    if config["store"].startswith("s3://"):
        bucket, _, prefix = config["store"][5:].partition("/")
        s3 = boto3.client("s3", endpoint_url=config["s3_endpoint"])
        return s3.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()  # type: ignore[no-any-return]
    return (Path(config["store"]) / key).read_bytes()


def test_save_list_verify_and_restore_test(setup: Setup) -> None:
    """save → list → verify --restore-test: the stored bytes are the bytes taken, and the canary reads back."""
    saved = setup.dr("snapshot", "save", "-o", "json")
    assert 0 == saved.exit_code, saved.output
    manifest = json.loads(saved.stdout)["manifest"]
    assert ("prod", True) == (manifest["cluster"], manifest["raft_index"] > 300)
    data = stored_bytes(setup, f"prod/{manifest['id']}.snap")
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["size"] == len(data)

    listed = setup.listed()
    assert [(manifest["id"], "saved")] == [(s["id"], s["state"]) for s in listed["snapshots"]]
    assert [] == listed["orphans"]

    verified = setup.dr("snapshot", "verify", "latest", "--restore-test", "-o", "json")
    assert 0 == verified.exit_code, verified.output
    result = json.loads(verified.stdout)
    assert result["ok"] is True
    assert f"canary kv/data/{CANARY} present" in result["detail"]
    assert "verified" == setup.listed()["snapshots"][0]["state"]

    metrics = setup.metrics.read_text()
    assert 'dr_snapshot_last_run_success{cluster="prod"} 1.0' in metrics
    assert f'dr_snapshot_last_size_bytes{{cluster="prod"}} {float(manifest["size"])}' in metrics
    assert "dr_snapshot_last_success_timestamp_seconds" in metrics


def test_list_and_verify_name_the_clusters_a_store_holds_when_the_named_one_has_none(setup: Setup) -> None:
    """`dr snapshot save --cluster prod` then `dr snapshot list --cluster staging` says where the snapshots are."""
    assert 0 == setup.dr("snapshot", "save").exit_code
    listed = setup.dr("snapshot", "list", "--cluster", "staging")
    assert 0 == listed.exit_code, listed.output
    assert "no snapshots of cluster staging in " in listed.stdout
    assert "the store holds snapshots of other clusters: prod (1); pass --cluster NAME" in listed.stdout
    as_json = json.loads(setup.dr("snapshot", "list", "--cluster", "staging", "-o", "json").stdout)
    assert ("staging", [], {"prod": 1}) == (as_json["cluster"], as_json["snapshots"], as_json["other_clusters"])
    assert {} == setup.listed()["other_clusters"]  # only asked for when the named cluster has none
    verified = setup.dr("snapshot", "verify", "latest", "--cluster", "staging")
    assert 1 == verified.exit_code
    assert "other clusters: prod (1)" in verified.output


def test_a_restore_test_without_the_canary_fails(tmp_path: Path, original: Original) -> None:
    """A canary path that is not in the snapshot fails the restore test (exit 1) and marks it failed."""
    setup = Setup(tmp_path, original, str(tmp_path / "store"))
    assert 0 == setup.dr("snapshot", "save").exit_code
    config = yaml.safe_load(setup.config.read_text())
    config["snapshots"]["canary_path"] = "kv/data/dr/not-there"
    setup.config.write_text(yaml.safe_dump(config))
    result = setup.dr("snapshot", "verify", "latest", "--restore-test")
    assert 1 == result.exit_code
    assert "canary kv/data/dr/not-there is missing from the restored data" in result.stdout
    assert "failed" == setup.listed()["snapshots"][0]["state"]


class CuttingProxy:
    """A TCP proxy to one Vault node that closes any connection after `limit` response bytes."""

    def __init__(self, upstream: str, limit: int) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.limit = limit
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)

        def forward_requests() -> None:
            try:
                while data := client.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=forward_requests, daemon=True).start()
        sent = 0
        try:
            while data := upstream.recv(65536):
                if sent + len(data) > self.limit:
                    client.sendall(data[: self.limit - sent])
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            # shutdown() sends the FIN at once; close() alone waits for the other thread's recv to return.
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self.server.close()


@pytest.mark.timeout(120)
def test_a_stream_cut_mid_way_commits_nothing(
    tmp_path: Path, make_bao: Callable[..., bao.BaoCluster], original: Original
) -> None:
    """A proxy drops the connection mid-snapshot: exit 1, no manifest, no data left, failure in the metrics."""
    procs = make_bao(1)
    _cluster, result = init_and_unseal(procs, 1, 1)
    client = hvac.Client(url=procs.addresses[0], token=result.root_token.reveal())
    client.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    time.sleep(0.5)
    for i in range(20):  # ~4 MB of incompressible state
        client.secrets.kv.v2.create_or_update_secret(
            path=f"big/{i}", secret={"v": os.urandom(100_000).hex()}, mount_point="kv"
        )
    proxy = CuttingProxy(procs.addresses[0], limit=1_000_000)
    try:
        setup = Setup(
            tmp_path,
            original,
            str(tmp_path / "store"),
            addresses=[proxy.address],
            extra={"vault": {"addresses": [proxy.address], "snapshot_timeout": "20s"}},
        )
        cut = setup.dr("snapshot", "save", env={"VAULT_TOKEN": result.root_token.reveal()})
    finally:
        proxy.close()
    assert 1 == cut.exit_code
    assert "snapshot" in cut.stderr
    listed = setup.listed()
    assert ([], []) == (listed["snapshots"], listed["orphans"])
    assert [] == [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    metrics = setup.metrics.read_text()
    assert 'dr_snapshot_last_run_success{cluster="prod"} 0.0' in metrics
    assert 'dr_snapshot_failures_total{cluster="prod"} 1.0' in metrics


def test_a_corrupted_snapshot_fails_verify_and_is_never_latest(setup: Setup) -> None:
    """Flip one byte of the newest stored snapshot: verify exits 1 naming it; `latest` is then the older one."""
    ids = [json.loads(setup.dr("snapshot", "save", "-o", "json").stdout)["manifest"]["id"] for _ in range(2)]
    path = stored_path(setup, f"prod/{ids[1]}.snap")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = setup.dr("snapshot", "verify", ids[1])
    assert 1 == result.exit_code
    assert f"{ids[1]}: FAILED: snapshot {ids[1]} does not match its manifest" in result.stdout
    shown = json.loads(setup.dr("snapshot", "show", "latest", "-o", "json").stdout)
    assert ids[0] == shown["id"]
    states = {s["id"]: s["state"] for s in setup.listed()["snapshots"]}
    assert {ids[0]: "saved", ids[1]: "failed"} == states


def test_two_saves_at_once_both_commit(tmp_path: Path, original: Original) -> None:
    """Two `dr snapshot save` processes on one store at the same time: two committed, verifiable snapshots."""
    setup = Setup(tmp_path, original, str(tmp_path / "store"))
    env = {**os.environ, **setup.env}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dr", "snapshot", "save"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [0, 0] == [p.returncode for p in procs], outputs
    listed = setup.listed()
    assert 2 == len(listed["snapshots"])
    assert [] == listed["orphans"]
    for entry in listed["snapshots"]:
        assert 0 == setup.dr("snapshot", "verify", entry["id"]).exit_code


def test_prune_keeps_the_newest_good_even_with_keep_last_0(tmp_path: Path, original: Original) -> None:
    """Prune with every count 0 keeps the newest; old orphans go, young ones stay; a dry run removes nothing."""
    setup = Setup(tmp_path, original, str(tmp_path / "store"))
    ids = [json.loads(setup.dr("snapshot", "save", "-o", "json").stdout)["manifest"]["id"] for _ in range(3)]
    store = tmp_path / "store" / "prod"
    old_orphan, young_orphan = store / "20200101T000000Z-aaaaaa.snap", store / "29990101T000000Z-bbbbbb.snap"
    old_orphan.write_bytes(b"left by a crashed save")
    os.utime(old_orphan, (time.time() - 7200, time.time() - 7200))
    time.sleep(1.1)  # past the 1 s minimum age
    young_orphan.write_bytes(b"a save in progress")
    zero = ["--keep-last", "0", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0"]
    dry = setup.dr("snapshot", "prune", *zero, "--dry-run")
    assert 0 == dry.exit_code, dry.output
    assert f"would remove: {ids[0]}" in dry.stdout
    assert 3 == len(setup.listed()["snapshots"])
    real = setup.dr("snapshot", "prune", *zero, "-o", "json")
    assert 0 == real.exit_code, real.output
    result = json.loads(real.stdout)
    assert sorted(ids[:2]) == sorted(result["deleted"])
    assert ["prod/20200101T000000Z-aaaaaa.snap"] == result["orphans"]
    assert ["newest good"] == result["kept"][ids[2]]
    assert [ids[2]] == [s["id"] for s in setup.listed()["snapshots"]]
    assert young_orphan.exists()


def test_save_with_approle_and_no_token(tmp_path: Path, original: Original) -> None:
    """vault.auth.method approle: the nightly job logs in with role_id/secret_id files, no VAULT_TOKEN."""
    admin = original.hvac()
    if "approle/" not in admin.sys.list_auth_methods()["data"]:
        admin.sys.enable_auth_method("approle")
    admin.sys.create_or_update_policy("dr-snapshot", 'path "sys/storage/raft/snapshot" { capabilities = ["read"] }')
    admin.auth.approle.create_or_update_approle("dr-snapshot", token_policies=["dr-snapshot"], token_ttl="10m")
    role_id = admin.auth.approle.read_role_id("dr-snapshot")["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id("dr-snapshot")["data"]["secret_id"]
    remember(secret_id)
    for name, value in (("role_id", role_id), ("secret_id", secret_id)):
        (tmp_path / name).write_text(value)
        (tmp_path / name).chmod(0o600)
    auth = {
        "method": "approle",
        "role_id_file": str(tmp_path / "role_id"),
        "secret_id_file": str(tmp_path / "secret_id"),
    }
    setup = Setup(tmp_path, original, str(tmp_path / "store"))
    config = yaml.safe_load(setup.config.read_text())
    config["vault"]["auth"] = auth
    setup.config.write_text(yaml.safe_dump(config))
    result = setup.dr("snapshot", "save", env={"VAULT_TOKEN": ""})
    assert 0 == result.exit_code, result.output
    assert 1 == len(setup.listed()["snapshots"])


def test_save_without_any_token_is_a_config_error(tmp_path: Path, original: Original) -> None:
    """No token and token auth: exit 2 saying which variables to set."""
    setup = Setup(tmp_path, original, str(tmp_path / "store"))
    result = setup.dr("snapshot", "save", env={"VAULT_TOKEN": "", "BAO_TOKEN": ""})
    assert 2 == result.exit_code
    assert "BAO_TOKEN and VAULT_TOKEN are unset" in result.stderr
