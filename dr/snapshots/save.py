"""`dr snapshot save`: stream a Raft snapshot from the active node into the store, then commit it.

The bytes go from Vault's HTTP response to the store's upload in chunks, and
through the archive check on the way, so memory stays flat whatever the
size. Only when the archive is proven complete, the upload committed and
the stored size matches is the manifest written; any failure before that
aborts the upload, and a data object left behind by a crash is an orphan
that no one will restore.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from dr import errors, logs
from dr.adapters import vault
from dr.snapshots import catalogue

log = logs.get("dr.snapshot")


@dataclass(frozen=True)
class Saved:
    manifest: catalogue.Manifest
    duration_s: float


def save(
    cat: catalogue.Catalogue,
    cluster: vault.VaultCluster,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    active_timeout: float = 30.0,
) -> Saved:
    """Take one snapshot into `cat`; raises (and commits nothing) unless it is complete."""
    started = time.monotonic()
    moment = clock()
    node = cluster.await_active(timeout=active_timeout)
    version = node.seal_status().version
    snapshot_id = catalogue.new_id(moment)
    key = cat.data_key(snapshot_id)
    log.info("snapshot_started", id=snapshot_id, source=node.address, store=cat.store.url)
    upload = cat.store.upload(key)
    try:
        info = node.snapshot(upload)
        upload.commit()
    except BaseException:
        upload.abort()
        raise
    stored = cat.store.size(key)
    if stored != info.size:
        cat.store.delete(key)
        raise errors.SnapshotError(
            f"{cat.store.url}/{key} holds {stored} bytes after upload, but {info.size} were sent",
            hint="the store lost or changed data; check it, then save again",
        )
    manifest = catalogue.Manifest(
        id=snapshot_id,
        cluster=cat.cluster,
        created_at=catalogue.stamp(moment),
        vault_version=version,
        raft_index=info.index,
        raft_term=info.term,
        size=info.size,
        sha256=info.sha256,
        source=node.address,
    )
    cat.store.put_bytes(cat.manifest_key(snapshot_id), manifest.to_json(), create_only=True)  # never overwrite
    duration = time.monotonic() - started
    log.info("snapshot_saved", id=snapshot_id, size=info.size, sha256=info.sha256, duration=round(duration, 2))
    return Saved(manifest, duration)
