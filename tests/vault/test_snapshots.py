"""Streaming Raft snapshots and their completeness check (OPENBAO-FACTS "Snapshots")."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import hvac
import pytest
import requests

from dr import errors, secret
from dr.adapters import localbao as bao
from dr.adapters import raft_archive, vault
from tests.harness_vault import Original, init_and_unseal, remember


@pytest.fixture(scope="module")
def snapshot(original: Original) -> bytes:
    out = io.BytesIO()
    original.cluster.active().with_token(original.token).snapshot(out)
    return out.getvalue()


def test_snapshot_streams_gzip_chunked_without_length(original: Original) -> None:
    """The endpoint answers application/gzip, chunked, with no Content-Length."""
    url = f"{original.cluster.active().address}/v1/sys/storage/raft/snapshot"
    with requests.get(url, headers={"X-Vault-Token": original.token.reveal()}, stream=True, timeout=30) as reply:
        assert 200 == reply.status_code
        assert "application/gzip" == reply.headers["Content-Type"]
        assert "chunked" == reply.headers.get("Transfer-Encoding")
        assert "Content-Length" not in reply.headers


def test_snapshot_info_is_proven_from_the_archive(original: Original, snapshot: bytes) -> None:
    """The adapter's SnapshotInfo matches the bytes: sha256, size, tar members, Raft index and term."""
    info = raft_archive.inspect(io.BytesIO(snapshot))
    assert hashlib.sha256(snapshot).hexdigest() == info.sha256
    assert len(snapshot) == info.size
    assert set(raft_archive.REQUIRED) == set(info.members)
    assert info.members["SHA256SUMS.sealed"] > 0
    assert info.index > 300  # one Raft entry per secret written, at least
    assert info.term >= 1
    with tarfile.open(fileobj=io.BytesIO(snapshot), mode="r:gz") as tar:
        assert sorted(raft_archive.REQUIRED) == sorted(m.name for m in tar.getmembers())


def test_snapshot_needs_read_on_the_snapshot_path(original: Original) -> None:
    """Without a token the snapshot is refused with the server's message, as a PermanentError."""
    with pytest.raises(errors.PermanentError, match="taking a Raft snapshot failed: permission denied"):
        original.cluster.active().with_token(None).snapshot(io.BytesIO())


def test_every_truncation_is_rejected(snapshot: bytes) -> None:
    """A snapshot cut at any point, or empty, fails the completeness check with a SnapshotError."""
    cuts = sorted(
        {0, 1, 10, len(snapshot) - 1, len(snapshot) - 8, *range(0, len(snapshot), max(1, len(snapshot) // 400))}
    )
    for cut in cuts:
        with pytest.raises(errors.SnapshotError):
            raft_archive.inspect(io.BytesIO(snapshot[:cut]))
    with pytest.raises(errors.SnapshotError, match="empty"):
        raft_archive.inspect(io.BytesIO(b""))


def test_flipped_bits_are_rejected(snapshot: bytes) -> None:
    """One flipped bit anywhere makes the archive fail (gzip CRC, tar checksum or SHA256SUMS)."""
    for position in range(0, len(snapshot), max(1, len(snapshot) // 100)):
        damaged = bytearray(snapshot)
        damaged[position] ^= 0x01
        with pytest.raises(errors.SnapshotError):
            raft_archive.inspect(io.BytesIO(bytes(damaged)))


def test_a_tar_without_the_sealed_hash_file_is_incomplete(snapshot: bytes) -> None:
    """A well-formed archive whose SHA256SUMS.sealed is empty or missing is refused."""
    members = {}
    with tarfile.open(fileobj=io.BytesIO(snapshot), mode="r:gz") as tar:
        for m in tar.getmembers():
            members[m.name] = tar.extractfile(m).read()  # type: ignore[union-attr]

    def rebuild(parts: dict[str, bytes]) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            for name, data in parts.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()

    assert raft_archive.inspect(io.BytesIO(rebuild(members))).index > 0  # the rebuild itself is sound
    with pytest.raises(errors.SnapshotError, match=r"SHA256SUMS\.sealed is empty"):
        raft_archive.inspect(io.BytesIO(rebuild({**members, "SHA256SUMS.sealed": b""})))
    with pytest.raises(errors.SnapshotError, match=r"missing SHA256SUMS\.sealed"):
        raft_archive.inspect(io.BytesIO(rebuild({k: v for k, v in members.items() if k != "SHA256SUMS.sealed"})))
    with pytest.raises(errors.SnapshotError, match=r"state\.bin does not match"):
        raft_archive.inspect(io.BytesIO(rebuild({**members, "state.bin": members["state.bin"][:-1] + b"!"})))


def test_a_stream_cut_by_the_server_dying_is_rejected(make_bao: Callable[..., bao.BaoCluster]) -> None:
    """Kill the node while the snapshot streams: the adapter raises, never returns a SnapshotInfo."""
    procs = make_bao(1)
    cluster, result = init_and_unseal(procs, 1, 1)
    node = cluster.nodes[0]
    client = hvac.Client(url=node.address, token=result.root_token.reveal())
    client.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    time.sleep(0.5)
    for i in range(40):  # ~8 MB of incompressible Raft state, so the stream takes many chunks
        blob = base64.b64encode(os.urandom(150_000)).decode()
        client.secrets.kv.v2.create_or_update_secret(path=f"big/{i}", secret={"v": blob}, mount_point="kv")

    class KillAfterFirstChunk(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            if procs.nodes[0].running:
                procs.kill(0)
            return super().write(data)

    with pytest.raises((errors.SnapshotError, errors.TransientError)) as info:
        node.snapshot(KillAfterFirstChunk(), chunk_size=1024)
    assert any(word in str(info.value) for word in ("truncated", "cut off", "cannot connect", "failed"))


def test_dev_server_has_no_snapshot_endpoint(tmp_path: Path) -> None:
    """`bao server -dev` keeps data in memory: the snapshot path is unsupported, hence Raft in every test."""
    port = bao.free_port()
    with (tmp_path / "dev.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                bao.find_bao(),
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{port}",
                "-dev-root-token-id=dev-root-x",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        )
    remember("dev-root-x")
    try:
        node = vault.VaultNode(f"http://127.0.0.1:{port}", token=secret.Secret("dev-root-x"))
        for _ in range(100):
            if node.state().role == "active":
                break
            time.sleep(0.05)
        with pytest.raises(errors.PermanentError, match="unsupported path"):
            node.snapshot(io.BytesIO())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_snapshot_needs_only_read_on_its_path(original: Original) -> None:
    """A token whose policy reads sys/storage/raft/snapshot can take one, and nothing else."""
    admin = original.hvac()
    admin.sys.create_or_update_policy("snapshot-only", 'path "sys/storage/raft/snapshot" { capabilities = ["read"] }')
    token = secret.Secret(admin.auth.token.create(policies=["snapshot-only"], ttl="10m")["auth"]["client_token"])
    remember(token)
    node = original.cluster.active().with_token(token)
    info = node.snapshot(io.BytesIO())
    assert info.index > 0
    with pytest.raises(errors.PermanentError, match="permission denied"):
        node.raft_peers()
