"""`dr snapshot verify`: re-check a stored snapshot, and optionally restore it into a throwaway OpenBao.

The checksum and archive check prove the bytes are what was saved and that
they form a complete Raft snapshot. Only a restore proves that the original
shares open it and that the data is there: `--restore-test` starts a local
one-node OpenBao, restores the snapshot with `snapshot-force`, unseals it
with the ORIGINAL shares, reads the configured canary path, and removes
everything it started, whatever happens.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from dr import errors, logs, secret, waiting
from dr.adapters import keys, localbao, raft_archive, vault
from dr.snapshots import catalogue

log = logs.get("dr.snapshot")


def check(
    cat: catalogue.Catalogue, entry: catalogue.Entry, *, copy_to: Path | None = None
) -> raft_archive.SnapshotInfo:
    """Read the stored bytes once: archive complete, size and sha256 as in the manifest."""
    manifest = entry.manifest
    archive = raft_archive.RaftArchive(hash_stream=False)  # the stream is hashed once, below
    digest = hashlib.sha256()
    broken: errors.SnapshotError | None = None
    out = copy_to.open("wb") if copy_to else None
    try:
        with cat.store.open(cat.data_key(manifest.id)) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
                if out:
                    out.write(chunk)
                if broken is None:
                    try:
                        archive.feed(chunk)
                    except errors.SnapshotError as exc:
                        broken = exc  # keep hashing: the checksum verdict names the real problem
    finally:
        if out:
            out.close()
    if digest.hexdigest() != manifest.sha256:
        raise errors.SnapshotError(
            f"snapshot {manifest.id} does not match its manifest: sha256 {digest.hexdigest()[:16]}… "
            f"instead of {manifest.sha256[:16]}…",
            hint="the stored object was changed or damaged; do not restore it, choose another snapshot",
        )
    if broken is not None:
        raise broken
    info = archive.finish()
    if info.size != manifest.size:
        raise errors.SnapshotError(f"snapshot {manifest.id} is {info.size} bytes; its manifest says {manifest.size}")
    return info


def verify(
    cat: catalogue.Catalogue,
    entry: catalogue.Entry,
    *,
    restore_test: Callable[[Path], str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> catalogue.Verification:
    """Check one snapshot, record the verdict beside its manifest, and return it (never raises for a bad one)."""
    workdir = Path(tempfile.mkdtemp(prefix="dr-verify-")) if restore_test else None
    try:
        copy = workdir / "snapshot.snap" if workdir else None
        try:
            info = check(cat, entry, copy_to=copy)
            detail = f"sha256 and archive ok (Raft index {info.index}, term {info.term})"
            if restore_test is not None and copy is not None:
                detail += "; " + restore_test(copy)
            result = catalogue.Verification(catalogue.stamp(clock()), True, detail, restore_test is not None)
        except errors.DRError as exc:
            result = catalogue.Verification(catalogue.stamp(clock()), False, str(exc), restore_test is not None)
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if not cat.store.read_only:
        cat.record(entry.manifest.id, result)
    log.info("snapshot_verified", id=entry.manifest.id, ok=result.ok, detail=result.detail)
    return result


def _await_active(node: vault.VaultNode, timeout: float = 60.0) -> None:
    waiting.wait_until(
        lambda: node.health_code() == 200 or waiting.Pending("not active yet"),
        what=f"{node.address} to become active",
        timeout=timeout,
        interval=0.1,
    )


def restore_tester(
    source: keys.KeySource, *, shares: int, threshold: int, canary_path: str | None, workdir: Path | None = None
) -> Callable[[Path], str]:
    """A restore test bound to the original cluster's key source and share settings."""

    def run(snapshot: Path) -> str:
        started = time.monotonic()
        root = Path(tempfile.mkdtemp(prefix="dr-restore-test-", dir=workdir))
        local = localbao.BaoCluster(root, size=1, generate_root=True)
        generated: secret.Secret | None = None
        try:
            local.start()
            node = vault.VaultNode(local.addresses[0])
            fresh = node.init(shares, threshold)  # throwaway: opens nothing once the restore is in
            node.unseal(fresh.shares[:threshold])
            _await_active(node)
            with snapshot.open("rb") as stream:
                vault.VaultCluster(local.addresses, token=fresh.root_token).restore(stream)
            original = source.shares()
            try:
                node.unseal(original)
            except errors.SealConfigStale:
                local.restart(0)
                node.unseal(original)
            _await_active(node)
            token = source.token()
            if token is None:
                token = generated = node.generate_root(original)
            reader = node.with_token(token)
            found = "no canary configured (snapshots.canary_path)"
            if canary_path:
                if not reader.read(canary_path):
                    raise errors.VerificationError(
                        f"restore test: canary {canary_path} is missing from the restored data",
                        hint="the snapshot restores but lacks the canary: check snapshots.canary_path and the source",
                    )
                found = f"canary {canary_path} present"
            if generated is not None:
                reader.revoke_self()
                generated = None
            return f"restore test ok in {time.monotonic() - started:.1f}s ({found})"
        finally:
            local.destroy()
            shutil.rmtree(root, ignore_errors=True)

    return run
