"""Checks a Vault/OpenBao Raft snapshot archive as it streams past, in constant memory.

`GET sys/storage/raft/snapshot` answers 200 before it sends the body, so a
snapshot cut off by a crash, a leader change or a dropped connection still
"succeeds" over HTTP. The only proof of a complete snapshot is the archive
itself: a gzip stream that ends properly, holding a tar with `meta.json`,
`state.bin`, `SHA256SUMS` (whose hashes must match those two members) and a
non-empty `SHA256SUMS.sealed`. `RaftArchive` is fed chunks as they are
downloaded or read back from a store; it hashes the whole stream (SHA-256),
parses gzip and tar incrementally, and keeps only the small members.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import queue
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any, Final

from dr import errors
from dr.adapters import stores

REQUIRED: Final = ("meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed")
_SMALL: Final = {"meta.json", "SHA256SUMS", "SHA256SUMS.sealed"}
_SMALL_LIMIT: Final = 1 << 20
_BLOCK: Final = 512
_INFLATE_STEP: Final = 1 << 20  # bound the output of each inflate call (a highly compressible state.bin)
RUNBOOK: Final = "runbooks/raft-restore.md"


@dataclass(frozen=True)
class SnapshotInfo:
    """What a complete archive proved about itself."""

    sha256: str
    size: int
    index: int
    term: int
    members: dict[str, int]
    state_size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "index": self.index,
            "term": self.term,
            "members": dict(self.members),
        }


def _bad(message: str) -> errors.SnapshotError:
    return errors.SnapshotError(message, runbook=RUNBOOK)


@dataclass
class _Member:
    name: str
    size: int
    remaining: int
    padding: int
    digest: Any = field(default_factory=hashlib.sha256)
    content: bytearray | None = None


class RaftArchive:
    """Feed it the snapshot's bytes in order; `finish()` returns `SnapshotInfo` or raises `SnapshotError`."""

    def __init__(self, *, hash_stream: bool = True) -> None:
        self._hash_stream = hash_stream
        self._hash = hashlib.sha256()
        self._size = 0
        self._inflate = zlib.decompressobj(wbits=31)  # gzip framing
        self._buf = bytearray()
        self._member: _Member | None = None
        self._skip = 0  # padding or metadata bytes still to discard
        self._ended = False  # two zero blocks seen
        self._sizes: dict[str, int] = {}
        self._digests: dict[str, str] = {}
        self._contents: dict[str, bytes] = {}

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._hash_stream:
            self._hash.update(chunk)
        self._size += len(chunk)
        if self._inflate.eof:
            raise _bad(f"snapshot has {len(chunk)} unexpected bytes after the end of its gzip stream")
        data = chunk
        try:
            while data:
                out = self._inflate.decompress(data, _INFLATE_STEP)
                self._parse(out)
                data = self._inflate.unconsumed_tail
                if self._inflate.eof and self._inflate.unused_data:
                    raise _bad("snapshot has unexpected bytes after the end of its gzip stream")
        except zlib.error as exc:
            raise _bad(f"snapshot is not a valid gzip stream: {exc}") from exc

    def _parse(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                continue
            member = self._member
            if member is not None:
                n = min(member.remaining, len(view))
                piece = view[:n]
                member.digest.update(piece)
                if member.content is not None:
                    member.content += piece
                member.remaining -= n
                view = view[n:]
                if member.remaining == 0:
                    self._close(member)
                continue
            if self._ended:
                # Anything after the end-of-archive marker is zero padding from the tar writer.
                if any(view):
                    raise _bad("snapshot has data after the end of its tar archive")
                return
            need = _BLOCK - len(self._buf)
            self._buf += view[:need]
            view = view[need:]
            if len(self._buf) == _BLOCK:
                header, self._buf = bytes(self._buf), bytearray()
                self._header(header)

    def _header(self, header: bytes) -> None:
        if header == b"\0" * _BLOCK:
            # The first zero block starts the end-of-archive marker.
            self._ended = True
            return
        stored = _octal(header[148:156], "checksum")
        if stored != sum(header[:148]) + 256 + sum(header[156:]):
            raise _bad("snapshot tar header checksum mismatch: the archive is corrupt")
        name = (header[345:500].rstrip(b"\0") + b"/" if header[345] else b"") + header[:100].rstrip(b"\0")
        size = _size(header[124:136])
        kind = header[156:157]
        padding = -size % _BLOCK
        if kind in (b"0", b"\0"):
            text = name.decode("utf-8", "replace")
            keep = text in _SMALL
            if keep and size > _SMALL_LIMIT:
                raise _bad(f"snapshot member {text} is {size} bytes; that is not a Raft snapshot")
            member = _Member(text, size, size, padding, content=bytearray() if keep else None)
            if size == 0:
                self._close(member)
            else:
                self._member = member
        else:
            # PAX/GNU metadata or directories: not part of a Raft snapshot's payload.
            self._skip = size + padding

    def _close(self, member: _Member) -> None:
        self._member = None
        self._skip = member.padding
        self._sizes[member.name] = member.size
        self._digests[member.name] = member.digest.hexdigest()
        if member.content is not None:
            self._contents[member.name] = bytes(member.content)

    def finish(self) -> SnapshotInfo:
        """Prove completeness or raise `SnapshotError` saying what is missing or wrong."""
        if self._size == 0:
            raise _bad("snapshot is empty (0 bytes)")
        if not self._inflate.eof:
            raise _bad(f"snapshot is truncated: its gzip stream ends early after {self._size} bytes")
        if self._member is not None or self._buf:
            raise _bad("snapshot is truncated inside its tar archive")
        missing = [n for n in REQUIRED if n not in self._digests]
        if missing:
            raise _bad(f"snapshot is incomplete: missing {', '.join(missing)}")
        if not self._contents.get("SHA256SUMS.sealed"):
            raise _bad("snapshot is incomplete: SHA256SUMS.sealed is empty")
        sums = _parse_sums(self._contents["SHA256SUMS"])
        for name in ("meta.json", "state.bin"):
            if sums.get(name) != self._digests[name]:
                raise _bad(f"snapshot is corrupt: {name} does not match its SHA256SUMS entry")
        try:
            meta = json.loads(self._contents["meta.json"])
            index, term = int(meta["Index"]), int(meta["Term"])
        except (ValueError, KeyError, TypeError) as exc:
            raise _bad(f"snapshot meta.json is unreadable: {exc}") from exc
        return SnapshotInfo(
            sha256=self._hash.hexdigest(),
            size=self._size,
            index=index,
            term=term,
            members=dict(self._sizes),
            state_size=int(meta.get("Size", 0)),
        )


def _octal(field_bytes: bytes, what: str) -> int:
    text = field_bytes.replace(b"\0", b" ").strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise _bad(f"snapshot tar header has an invalid {what}: the archive is corrupt") from None


def _size(field_bytes: bytes) -> int:
    if field_bytes[0] & 0x80:  # base-256 encoding for sizes over 8 GiB
        return int.from_bytes(field_bytes[1:], "big")
    return _octal(field_bytes, "size")


def _parse_sums(content: bytes) -> dict[str, str]:
    sums: dict[str, str] = {}
    for line in content.decode("utf-8", "replace").splitlines():
        digest, _, name = line.strip().partition(" ")
        if digest and name:
            sums[name.strip().lstrip("*")] = digest.lower()
    return sums


class BackgroundCheck:
    """`RaftArchive` on a worker thread, so hashing and inflating overlap the download.

    SHA-256 and zlib release the GIL on large buffers, so on two cores the
    check costs almost no wall time. The queue is bounded (memory stays
    flat); the first problem found is raised by the next `feed` or by
    `finish`.
    """

    def __init__(self, max_chunks: int = 8) -> None:
        # The whole-stream hash runs on the caller's thread, the archive's own work on the worker:
        # that splits the CPU about evenly over two cores.
        self._hash = hashlib.sha256()
        self._archive = RaftArchive(hash_stream=False)
        self._queue: queue.Queue[bytes | None] = queue.Queue(max_chunks)
        self._error: errors.SnapshotError | None = None
        self._thread = threading.Thread(target=self._run, name="dr-snapshot-check", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._archive.feed(chunk)
                except errors.SnapshotError as exc:
                    self._error = exc  # keep draining so that the producer never blocks

    def feed(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._hash.update(chunk)
        self._queue.put(chunk)

    def close(self) -> None:
        """Stop the worker without a verdict (the download failed)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def finish(self) -> SnapshotInfo:
        self.close()
        if self._error is not None:
            raise self._error
        return dataclasses.replace(self._archive.finish(), sha256=self._hash.hexdigest())


def inspect(stream: stores.Readable, *, chunk_size: int = 1 << 16) -> SnapshotInfo:
    """Read a stored snapshot to its end and check it."""
    archive = RaftArchive()
    while chunk := stream.read(chunk_size):
        archive.feed(chunk)
    return archive.finish()
