"""What the S3 store promises a backup, proven against a real S3 server (versitygw on loopback).

Checksums the server checks and the reader checks again, encryption headers
on every write, Object Lock that prune respects and reports, a manifest
that a second writer cannot overwrite, a recovery's download from a
read-only store, and the credentials or bucket settings an operator gets
wrong, each with a clear message and exit code.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
import yaml

from dr import errors
from dr.adapters import stores
from dr.snapshots import catalogue, verify
from tests.harness_s3 import S3Server
from tests.harness_vault import Original
from tests.snapshots.test_save import Setup


def bucket(endpoint: str, *, lock: bool = False) -> str:
    name = f"dr-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
    return name


def sent_headers(store: stores.Store) -> list[tuple[str, dict[str, str]]]:
    """Every request the store's client sends from now on, as (operation, headers), read off the wire."""
    assert isinstance(store, stores.S3Store)
    seen: list[tuple[str, dict[str, str]]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:  # event_name: before-send.s3.<Operation>
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else str(v) for k, v in request.headers.items()}
        seen.append((event_name.rsplit(".", 1)[-1], headers))

    store.client.meta.events.register("before-send.s3", record)
    return seen


def test_multipart_parts_and_small_objects_carry_sha256_that_reads_check(s3_server: S3Server, s3_env: str) -> None:
    """20 MiB go up as three parts with SHA-256 each (the server checks them); a damaged manifest fails its read."""
    name = bucket(s3_env)
    store = stores.open_store(f"s3://{name}/p", s3_endpoint=s3_env)
    seen = sent_headers(store)
    upload = store.upload("c/big.snap")
    for _ in range(20):
        upload.write(os.urandom(1 << 20))
    upload.commit()
    parts = [h for op, h in seen if op == "UploadPart"]
    assert 3 == len(parts)
    assert all(len(h["x-amz-checksum-sha256"]) == 44 for h in parts)  # base64 of 32 bytes
    head = boto3.client("s3", endpoint_url=s3_env).head_object(Bucket=name, Key="p/c/big.snap", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"].endswith("-3"), head.get("ChecksumSHA256")  # composite: one per part

    store.put_bytes("c/m.json", b'{"id": "x"}')
    path = s3_server.root / name / "p" / "c" / "m.json"
    path.write_bytes(b'{"id": "y"}')  # same length, one byte changed on the server's disk
    with pytest.raises(errors.PermanentError, match=r"(?i)checksum"):
        store.get_bytes("c/m.json")


def test_sse_kms_headers_go_with_every_write(s3_env: str) -> None:
    """SSE-KMS and its key id are sent on the manifest's PUT and on the multipart upload's creation."""
    name = bucket(s3_env)
    options = stores.S3Options(sse="aws:kms", kms_key_id="alias/dr-snapshots")
    store = stores.open_store(f"s3://{name}", s3_endpoint=s3_env, s3_options=options)
    seen = sent_headers(store)
    store.put_bytes("c/m.json", b"{}")
    upload = store.upload("c/d.snap")
    upload.write(b"z" * 100)
    upload.commit()
    writes = {op: h for op, h in seen if op in ("PutObject", "CreateMultipartUpload")}
    assert {"PutObject", "CreateMultipartUpload"} == set(writes)
    for headers in writes.values():
        assert "aws:kms" == headers["x-amz-server-side-encryption"]
        assert "alias/dr-snapshots" == headers["x-amz-server-side-encryption-aws-kms-key-id"]


def lock_config(setup: Setup, days: int | None) -> None:
    config = yaml.safe_load(setup.config.read_text())
    config["snapshots"].pop("s3_object_lock_days", None)
    if days:
        config["snapshots"].update(s3_object_lock_days=days, s3_object_lock_mode="COMPLIANCE")
    setup.config.write_text(yaml.safe_dump(config))


def test_prune_keeps_what_object_lock_retains_says_until_when_and_prunes_the_rest(
    tmp_path: Path, original: Original, s3_env: str
) -> None:
    """Three snapshots, the oldest under COMPLIANCE retention: prune removes the middle one, keeps the locked one
    whole and listed, names its unlock date (in a dry run too) and exits 0."""
    name = bucket(s3_env, lock=True)
    setup = Setup(tmp_path, original, f"s3://{name}/vault", endpoint=s3_env)
    ids = []
    for days in (1, None, None):
        lock_config(setup, days)
        saved = setup.dr("snapshot", "save", "-o", "json")
        assert 0 == saved.exit_code, saved.output
        ids.append(json.loads(saved.stdout)["manifest"]["id"])
    head = boto3.client("s3", endpoint_url=s3_env).head_object(Bucket=name, Key=f"vault/prod/{ids[0]}.snap")
    assert "COMPLIANCE" == head["ObjectLockMode"]
    until = head["ObjectLockRetainUntilDate"]
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(days=1)
    raw = boto3.client("s3", endpoint_url=s3_env)
    with pytest.raises(botocore.exceptions.ClientError, match="object lock"):  # the server enforces it, not only dr
        raw.delete_object(Bucket=name, Key=f"vault/prod/{ids[0]}.snap", VersionId=head["VersionId"])

    time.sleep(1.1)  # past the setup's min_age (1 s), which no retention rule overrides
    zero = ["--keep-last", "0", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0"]
    dry = setup.dr("snapshot", "prune", *zero, "--dry-run")
    assert 0 == dry.exit_code, dry.output
    assert f"would remove: {ids[1]}" in dry.stdout
    assert f"kept: {ids[0]} (Object Lock until {until.isoformat()}" in dry.stdout
    real = setup.dr("snapshot", "prune", *zero, "-o", "json")
    assert 0 == real.exit_code, real.output
    result = json.loads(real.stdout)
    assert ([ids[1]], {ids[0]: until.isoformat()}, {}) == (result["deleted"], result["locked"], result["failed"])
    assert sorted([ids[0], ids[2]]) == sorted(s["id"] for s in setup.listed()["snapshots"])
    assert 0 == setup.dr("snapshot", "verify", ids[0]).exit_code  # still whole: manifest, data, verification


def test_object_lock_asked_of_a_bucket_without_it_is_a_config_error_before_any_write(
    tmp_path: Path, original: Original, s3_env: str
) -> None:
    name = bucket(s3_env)
    setup = Setup(tmp_path, original, f"s3://{name}/vault", endpoint=s3_env)
    lock_config(setup, 7)
    result = setup.dr("snapshot", "save")
    assert 2 == result.exit_code, result.output
    assert f"bucket {name} has no Object Lock" in result.output
    assert "created with Object Lock enabled" in result.output
    assert "Traceback" not in result.output
    assert "Contents" not in boto3.client("s3", endpoint_url=s3_env).list_objects_v2(Bucket=name)


def test_a_recovery_downloads_from_a_read_only_s3_store_checked_against_the_manifest(
    tmp_path: Path, original: Original, s3_env: str
) -> None:
    """The snapshot step's download (verify.check with a copy) from S3: the bytes the manifest names, and no
    write reaches the store."""
    name = bucket(s3_env)
    setup = Setup(tmp_path, original, f"s3://{name}/vault", endpoint=s3_env)
    saved = setup.dr("snapshot", "save", "-o", "json")
    manifest = json.loads(saved.stdout)["manifest"]
    store = stores.open_store(f"s3://{name}/vault", s3_endpoint=s3_env, read_only=True)
    seen = sent_headers(store)
    cat = catalogue.Catalogue(store, "prod")
    copy = tmp_path / "download.snap"
    info = verify.check(cat, cat.get("latest"), copy_to=copy)
    assert (manifest["sha256"], manifest["raft_index"]) == (hashlib.sha256(copy.read_bytes()).hexdigest(), info.index)
    assert {"ListObjectsV2", "GetObject"} >= {op for op, _ in seen}, seen


@pytest.mark.parametrize("wrong", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
def test_wrong_credentials_are_a_config_error_that_names_them(
    tmp_path: Path, original: Original, s3_env: str, monkeypatch: pytest.MonkeyPatch, wrong: str
) -> None:
    name = bucket(s3_env)
    setup = Setup(tmp_path, original, f"s3://{name}/vault", endpoint=s3_env)
    monkeypatch.setenv(wrong, "wrong" + secrets.token_hex(8))
    result = setup.dr("snapshot", "list")
    assert 2 == result.exit_code, result.output
    assert "refused the AWS credentials" in result.output
    assert "Traceback" not in result.output
