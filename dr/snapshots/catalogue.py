"""The snapshot catalogue: manifests as commit markers, verification records, orphans.

Layout in a store, per cluster::

    <cluster>/<id>.snap          the Raft snapshot, exactly as Vault streamed it
    <cluster>/<id>.json          its manifest, written LAST: the commit marker
    <cluster>/<id>.verify.json   the latest `dr snapshot verify` result (optional)

A data object without a manifest is an orphan (a save that died, or a prune
that deleted the manifest first): never listed as restorable, removed by
prune once older than the minimum age. Manifests are never rewritten, so a
store with Object Lock can keep them immutable; verification results live
beside them.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from dr import __version__, errors
from dr.adapters import stores

KIND: Final = "dr.snapshot"
SCHEMA_VERSION: Final = 1
RUNBOOK: Final = "runbooks/raft-restore.md"

State = Literal["saved", "verified", "failed"]


def stamp(moment: datetime) -> str:
    """UTC with microseconds: two saves in one second must still order by time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def new_id(moment: datetime) -> str:
    """`20261201T020000Z-3fa9c1`: sorts by time; the random suffix keeps two saves in one second apart."""
    return f"{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Manifest:
    """What a committed snapshot is: identity, provenance, and how to check its bytes."""

    id: str
    cluster: str
    created_at: str
    vault_version: str
    raft_index: int
    raft_term: int
    size: int
    sha256: str
    source: str
    tool_version: str = __version__

    def to_json(self) -> bytes:
        return (json.dumps({"kind": KIND, "schema_version": SCHEMA_VERSION, **asdict(self)}, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes, *, where: str) -> Manifest:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise errors.SnapshotError(f"manifest {where} is not JSON: {exc}", runbook=RUNBOOK) from exc
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise errors.SnapshotError(f"{where} is not a dr snapshot manifest", runbook=RUNBOOK)
        if data.get("schema_version") != SCHEMA_VERSION:
            raise errors.SnapshotError(
                f"manifest {where} has schema version {data.get('schema_version')!r}; this dr reads {SCHEMA_VERSION}",
                runbook=RUNBOOK,
            )
        fields = {k: v for k, v in data.items() if k not in ("kind", "schema_version")}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise errors.SnapshotError(f"manifest {where} has an unexpected layout: {exc}", runbook=RUNBOOK) from exc

    @property
    def created(self) -> datetime:
        return parse_stamp(self.created_at)


@dataclass(frozen=True)
class Verification:
    """The result of the latest `dr snapshot verify` of one snapshot."""

    checked_at: str
    ok: bool
    detail: str
    restore_test: bool = False

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2) + "\n").encode()


@dataclass(frozen=True)
class Entry:
    """A committed snapshot and what is known about its health."""

    manifest: Manifest
    verification: Verification | None

    @property
    def state(self) -> State:
        """`saved`: proven complete while it was taken; `verified`: re-checked since; `failed`: do not use."""
        if self.verification is None:
            return "saved"
        return "verified" if self.verification.ok else "failed"

    @property
    def good(self) -> bool:
        return self.state != "failed"

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        moment = now or datetime.now(UTC)
        return {
            **asdict(self.manifest),
            "age_s": round((moment - self.manifest.created).total_seconds()),
            "state": self.state,
            "verification": asdict(self.verification) if self.verification else None,
        }


class Catalogue:
    """The snapshots of one cluster in one store."""

    def __init__(self, store: stores.Store, cluster: str) -> None:
        self.store = store
        self.cluster = cluster

    def data_key(self, snapshot_id: str) -> str:
        return f"{self.cluster}/{snapshot_id}.snap"

    def manifest_key(self, snapshot_id: str) -> str:
        return f"{self.cluster}/{snapshot_id}.json"

    def verify_key(self, snapshot_id: str) -> str:
        return f"{self.cluster}/{snapshot_id}.verify.json"

    def _objects(self) -> list[stores.StoredObject]:
        return self.store.list(self.cluster)

    def scan(self) -> tuple[list[Entry], list[stores.StoredObject], list[str]]:
        """(committed entries newest first, orphaned data objects, unreadable manifests)."""
        objects = self._objects()
        names = {o.key for o in objects}
        entries: list[Entry] = []
        problems: list[str] = []
        for obj in objects:
            if not is_manifest(obj.key):
                continue
            snapshot_id = obj.key.rsplit("/", 1)[-1][: -len(".json")]
            try:
                manifest = Manifest.from_json(self.store.get_bytes(obj.key), where=f"{self.store.url}/{obj.key}")
            except errors.DRError as exc:
                problems.append(str(exc))
                continue
            if self.data_key(snapshot_id) not in names:
                problems.append(f"{self.store.url}/{obj.key}: manifest without its data object")
                continue
            entries.append(Entry(manifest, self._verification(snapshot_id, names)))
        committed = {self.data_key(e.manifest.id) for e in entries}
        orphans = [o for o in objects if o.key.endswith(".snap") and o.key not in committed]
        entries.sort(key=lambda e: (e.manifest.created_at, e.manifest.id), reverse=True)
        return entries, orphans, problems

    def _verification(self, snapshot_id: str, names: set[str]) -> Verification | None:
        key = self.verify_key(snapshot_id)
        if key not in names:
            return None
        try:
            return Verification(**json.loads(self.store.get_bytes(key)))
        except (ValueError, TypeError):
            # An unreadable verification record proves nothing either way: treat as failed.
            return Verification(checked_at="", ok=False, detail=f"unreadable verification record {key}")

    def entries(self) -> list[Entry]:
        return self.scan()[0]

    def get(self, snapshot_id: str) -> Entry:
        if snapshot_id == "latest":
            return self.latest_good()
        for entry in self.entries():
            if entry.manifest.id == snapshot_id:
                return entry
        raise errors.ConfigError(
            f"no committed snapshot {snapshot_id!r} for cluster {self.cluster} in {self.store.url}",
            hint=self._elsewhere() or "list them with `dr snapshot list`",
            runbook=RUNBOOK,
        )

    def latest_good(self) -> Entry:
        """The newest snapshot not known to be bad."""
        for entry in self.entries():
            if entry.good:
                return entry
        raise errors.PermanentError(
            f"no good snapshot for cluster {self.cluster} in {self.store.url}",
            hint=self._elsewhere() or "check the store URL and cluster name; `dr snapshot list` shows what is there",
            runbook=RUNBOOK,
        )

    def other_clusters(self) -> dict[str, int]:
        """How many snapshots (manifests) the store holds of each cluster but this one: what a wrong
        `--cluster` (or `cluster.name`) is told, instead of an empty list."""
        found: dict[str, int] = {}
        for obj in self.store.list():
            cluster, _, name = obj.key.partition("/")
            if cluster != self.cluster and "/" not in name and is_manifest(name):
                found[cluster] = found.get(cluster, 0) + 1
        return dict(sorted(found.items()))

    def _elsewhere(self) -> str | None:
        return elsewhere(self.other_clusters())

    def record(self, snapshot_id: str, verification: Verification) -> None:
        self.store.put_bytes(self.verify_key(snapshot_id), verification.to_json())

    def locked_until(self, snapshot_id: str) -> datetime | None:
        """The latest Object Lock retention date among the snapshot's objects, if any is still retained."""
        locks = [until for until in map(self.store.locked_until, self._keys(snapshot_id)) if until is not None]
        return max(locks) if locks else None

    def delete(self, snapshot_id: str) -> None:
        """Uncommit first (manifest), then data: a crash in between leaves an orphan, never a broken entry.

        Retention is checked on all three objects before any is touched, so a snapshot that Object Lock
        still holds stays whole and listed instead of losing its manifest and becoming an orphan.
        """
        until = self.locked_until(snapshot_id)
        if until is not None:
            raise errors.ObjectLocked(
                f"snapshot {snapshot_id} is under Object Lock retention until {until:%Y-%m-%d %H:%M} UTC",
                until=until,
                hint="the store keeps it until then; a prune after that date removes it",
                runbook=RUNBOOK,
            )
        for key in self._keys(snapshot_id):
            self.store.delete(key)

    def _keys(self, snapshot_id: str) -> tuple[str, str, str]:
        """A snapshot's objects in the order a delete takes them: the commit marker first."""
        return self.manifest_key(snapshot_id), self.verify_key(snapshot_id), self.data_key(snapshot_id)


def is_manifest(key: str) -> bool:
    return key.endswith(".json") and not key.endswith(".verify.json")


def elsewhere(others: dict[str, int]) -> str | None:
    """The hint for a cluster with no snapshots in a store that holds other clusters' (`other_clusters`)."""
    if not others:
        return None
    held = ", ".join(f"{name} ({count})" for name, count in others.items())
    return f"the store holds snapshots of other clusters: {held}; pass --cluster NAME (or set cluster.name)"
