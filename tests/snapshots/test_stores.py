"""Snapshot stores: a directory and an S3 bucket (a real S3 server, versitygw, on loopback), behind one interface."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from dr import errors
from dr.adapters import stores


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[stores.Store]:
    if request.param == "file":
        yield stores.open_store(f"file://{tmp_path}/store")
        return
    endpoint = request.getfixturevalue("s3_env")
    bucket = f"dr-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    yield stores.open_store(f"s3://{bucket}/backups/prod", s3_endpoint=endpoint)


def test_upload_is_invisible_until_commit(store: stores.Store) -> None:
    """Written bytes appear under the key only after commit(); abort() leaves nothing."""
    upload = store.upload("c/one.snap")
    upload.write(b"a" * 1000)
    assert [] == [o.key for o in store.list("c")]
    upload.commit()
    assert ["c/one.snap"] == [o.key for o in store.list("c")]
    aborted = store.upload("c/two.snap")
    aborted.write(b"b" * 1000)
    aborted.abort()
    assert ["c/one.snap"] == [o.key for o in store.list("c")]
    assert 1000 == store.size("c/one.snap")
    assert store.size("c/two.snap") is None


def test_large_upload_streams_in_parts_and_reads_back_identical(store: stores.Store) -> None:
    """20 MiB in 1 MiB writes (three S3 parts) reads back byte for byte."""
    digest = hashlib.sha256()
    upload = store.upload("c/big.snap")
    for _ in range(20):
        chunk = os.urandom(1 << 20)
        digest.update(chunk)
        upload.write(chunk)
    upload.commit()
    back = hashlib.sha256()
    with store.open("c/big.snap") as stream:
        while chunk := stream.read(1 << 16):
            back.update(chunk)
    assert digest.hexdigest() == back.hexdigest()


def test_a_create_only_write_never_overwrites(store: stores.Store) -> None:
    """Of two writers of one manifest key, the first wins and the second gets AlreadyExists; the bytes stay."""
    store.put_bytes("c/m.json", b'{"first": 1}', create_only=True)
    with pytest.raises(errors.AlreadyExists, match="already exists"):
        store.put_bytes("c/m.json", b'{"second": 2}', create_only=True)
    assert b'{"first": 1}' == store.get_bytes("c/m.json")
    store.put_bytes("c/m.json", b'{"third": 3}')  # an ordinary write (a verification record) replaces
    assert b'{"third": 3}' == store.get_bytes("c/m.json")


def test_small_objects_and_delete(store: stores.Store) -> None:
    """put_bytes/get_bytes round-trip; delete removes; a missing key is a clear PermanentError."""
    store.put_bytes("c/m.json", b'{"x": 1}')
    assert b'{"x": 1}' == store.get_bytes("c/m.json")
    store.delete("c/m.json")
    with pytest.raises(errors.PermanentError):
        store.get_bytes("c/m.json")


@pytest.mark.parametrize("url", ["file:///tmp/dr-never-written", "s3://bucket/prefix"])
def test_read_only_store_refuses_every_write(url: str) -> None:
    """A store opened read-only (as a recovery opens it) refuses upload, put and delete before any I/O."""
    readonly = stores.open_store(url, s3_endpoint="http://127.0.0.1:9", read_only=True)
    for attempt in (
        lambda: readonly.upload("c/x.snap"),
        lambda: readonly.put_bytes("c/x.json", b"{}"),
        lambda: readonly.delete("c/x.json"),
    ):
        with pytest.raises(errors.PermanentError, match="read-only"):
            attempt()
    assert not Path("/tmp/dr-never-written").exists()


@pytest.mark.parametrize("key", ["../escape.snap", "/abs.snap", "a/../../b.snap", "", "a//b.snap"])
def test_keys_cannot_escape_the_store(tmp_path: Path, key: str) -> None:
    """Keys with traversal, absolute paths or empty parts are refused before touching anything."""
    with pytest.raises(errors.ConfigError, match="not a valid snapshot key"):
        stores.FileStore(tmp_path).put_bytes(key, b"x")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3:///prefix", "has no bucket"),
        ("ftp://host/x", "unknown scheme 'ftp'"),
        ("file://otherhost/x", "names a host"),
    ],
)
def test_bad_store_urls(url: str, message: str) -> None:
    """Store URLs that cannot work are ConfigErrors naming the problem."""
    with pytest.raises(errors.ConfigError, match=message):
        stores.open_store(url)
