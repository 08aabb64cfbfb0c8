"""Snapshot stores: a local directory or an S3 bucket, behind one small interface, chosen by URL.

A store holds opaque objects under keys (`<cluster>/<id>.snap`,
`<cluster>/<id>.json`). Large objects are written through an `Upload` that
streams (memory stays flat whatever the size) and becomes visible only on
`commit()`: a file store writes a hidden partial file and renames it, S3
completes a multipart upload whose parts carry SHA-256 checksums the server
checks. Small objects (manifests) are written atomically in one call, and
a manifest only if its key is free (`If-None-Match: *`): of two writers, one
wins and the other is told. Objects under S3 Object Lock retention are never
deleted early: `delete` checks first and raises `ObjectLocked` with the date,
because on a versioned bucket a plain DELETE "succeeds" by hiding the
snapshot behind a delete marker while its bytes stay locked.
A store opened read-only refuses every write, which is how a recovery uses
it: nothing a recovery does can overwrite or prune the good snapshots.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Final, Protocol
from urllib.parse import urlparse

from dr import errors, files
from dr.adapters import aws

PART_SIZE: Final = 8 * 1024 * 1024  # S3's minimum is 5 MiB; 8 MiB keeps requests few and memory small
PARTS_IN_FLIGHT: Final = 8  # as fast as boto3 upload_file here; memory bound (8 + 1) × 8 MiB = 72 MiB
RUNBOOK: Final = "runbooks/raft-restore.md"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime


class Readable(Protocol):
    """What a store hands out for reading: a stream of bytes."""

    def read(self, size: int = -1, /) -> bytes: ...


class Upload(Protocol):
    """A streaming write that is invisible until committed."""

    def write(self, data: bytes) -> int: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class Store(Protocol):
    url: str
    read_only: bool

    def upload(self, key: str) -> Upload: ...

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> None: ...

    def locked_until(self, key: str) -> datetime | None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def open(self, key: str) -> contextlib.AbstractContextManager[Readable]: ...

    def list(self, prefix: str = "") -> list[StoredObject]: ...

    def size(self, key: str) -> int | None: ...

    def delete(self, key: str) -> None: ...


def _check_key(key: str) -> str:
    path = PurePosixPath(key)
    if not key or path.is_absolute() or any(part in ("", ".", "..") for part in key.split("/")):
        raise errors.ConfigError(f"{key!r} is not a valid snapshot key")
    return key


def _refuse_write(url: str) -> errors.PermanentError:
    return errors.PermanentError(
        f"snapshot store {url} is open read-only",
        hint="a recovery never writes to or prunes the snapshot store",
    )


class FileStore:
    """A directory on a local or mounted filesystem (a PVC, NFS)."""

    def __init__(self, root: Path, *, read_only: bool = False) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root.resolve()}"
        self.read_only = read_only

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _writable_dir(self, key: str) -> Path:
        if self.read_only:
            raise _refuse_write(self.url)
        path = self._path(key)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.ConfigError(
                f"cannot create {path.parent}: {exc.strerror or exc}", hint="check the store path and permissions"
            ) from exc
        return path

    def upload(self, key: str) -> Upload:
        return _FileUpload(self._writable_dir(key))

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        files.write_atomic(self._writable_dir(key), data, create_only=create_only)

    def locked_until(self, key: str) -> datetime | None:
        return None  # a directory has no retention of its own; S3 Object Lock is the immutable store

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise errors.PermanentError(f"{self.url}/{key} does not exist") from None
        except OSError as exc:
            raise errors.PermanentError(f"cannot read {self.url}/{key}: {exc.strerror or exc}") from exc

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise errors.PermanentError(f"{self.url}/{key} does not exist") from None
        with handle:
            yield handle

    def list(self, prefix: str = "") -> list[StoredObject]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                info = path.stat()
                key = path.relative_to(self.root).as_posix()
                found.append(StoredObject(key, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC)))
        return sorted(found, key=lambda o: o.key)

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        if self.read_only:
            raise _refuse_write(self.url)
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()


class _FileUpload:
    def __init__(self, target: Path) -> None:
        self.target = target
        self.partial = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
        self._fd: int | None = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)

    def write(self, data: bytes) -> int:
        assert self._fd is not None, "write after commit or abort"
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self.abort()
            raise errors.PermanentError(f"cannot write {self.target}: {exc.strerror or exc}") from exc
        return len(data)

    def commit(self) -> None:
        assert self._fd is not None, "commit after commit or abort"
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
            os.close(fd)
            self.partial.replace(self.target)
            files.fsync_dir(self.target.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.partial.unlink()
            raise errors.PermanentError(f"cannot write {self.target}: {exc.strerror or exc}") from exc

    def abort(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            self.partial.unlink()


@dataclass(frozen=True)
class S3Options:
    """Server-side encryption and Object Lock for everything the store writes."""

    sse: str | None = None  # "AES256" (SSE-S3) or "aws:kms" (SSE-KMS)
    kms_key_id: str | None = None
    object_lock_days: int | None = None
    object_lock_mode: str = "GOVERNANCE"

    def put_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"ChecksumAlgorithm": "SHA256"}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        if self.object_lock_days:
            args["ObjectLockMode"] = self.object_lock_mode
            args["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=self.object_lock_days)
        return args


class S3Store:
    """An S3 (or S3-compatible) bucket and key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        options: S3Options | None = None,
        read_only: bool = False,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.read_only = read_only
        self.options = options or S3Options()
        self.client = aws.client("s3", region=region, endpoint_url=endpoint_url)
        self._lock_checked = False

    def _writable(self) -> None:
        """Refuse writes on a read-only store; with retention asked for, the bucket must have Object Lock."""
        if self.read_only:
            raise _refuse_write(self.url)
        if self.options.object_lock_days and not self._lock_checked:
            try:
                reply = self.client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = reply.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            except Exception as exc:
                if aws.error_code(exc) != "ObjectLockConfigurationNotFoundError":
                    raise aws.translate(exc, f"read the Object Lock configuration of {self.bucket}") from exc
                enabled = False
            if not enabled:
                raise errors.ConfigError(
                    f"bucket {self.bucket} has no Object Lock, but snapshots.s3_object_lock_days asks for "
                    f"{self.options.object_lock_days} days of {self.options.object_lock_mode} retention",
                    hint="Object Lock can only be chosen when a bucket is created: save to a bucket created with "
                    "Object Lock enabled, or remove snapshots.s3_object_lock_days from the config",
                    runbook=RUNBOOK,
                )
            self._lock_checked = True

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def upload(self, key: str) -> Upload:
        self._writable()
        return _S3Upload(self, self._key(key))

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> None:
        self._writable()
        full = self._key(key)
        condition = {"IfNoneMatch": "*"} if create_only else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **condition, **self.options.put_args())
        except Exception as exc:
            if not aws.is_aws_error(exc):
                raise
            if create_only and aws.error_code(exc) in ("PreconditionFailed", "412"):
                raise errors.AlreadyExists(
                    f"s3://{self.bucket}/{full} already exists",
                    hint="another writer created it first; nothing was overwritten",
                    runbook=RUNBOOK,
                ) from exc
            raise aws.translate(exc, f"write s3://{self.bucket}/{full}", runbook=RUNBOOK) from exc

    def _head(self, full: str) -> dict[str, Any] | None:
        try:
            reply: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            if not aws.is_aws_error(exc):
                raise
            if aws.error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise aws.translate(exc, f"read s3://{self.bucket}/{full}", runbook=RUNBOOK) from exc
        return reply

    def locked_until(self, key: str) -> datetime | None:
        head = self._head(self._key(key))
        until: datetime | None = head.get("ObjectLockRetainUntilDate") if head else None
        return until if until is not None and until > datetime.now(UTC) else None

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as body:
            return body.read()

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[Readable]:
        full = self._key(key)
        with aws.mapped(f"read s3://{self.bucket}/{full}", runbook=RUNBOOK):
            # ChecksumMode makes botocore check the bytes against the SHA-256 the upload stored, as they stream.
            body = self.client.get_object(Bucket=self.bucket, Key=full, ChecksumMode="ENABLED")["Body"]
        try:
            yield _Reader(body, f"s3://{self.bucket}/{full}")
        finally:
            body.close()

    def list(self, prefix: str = "") -> list[StoredObject]:
        base = self._key(prefix) + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        found = []
        with aws.mapped(f"list s3://{self.bucket}/{base}", runbook=RUNBOOK):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) + 1 :] if self.prefix else item["Key"]
                    found.append(StoredObject(key, int(item["Size"]), item["LastModified"]))
        return sorted(found, key=lambda o: o.key)

    def size(self, key: str) -> int | None:
        head = self._head(self._key(key))
        return int(head["ContentLength"]) if head else None

    def delete(self, key: str) -> None:
        if self.read_only:
            raise _refuse_write(self.url)
        full = self._key(key)
        head = self._head(full)
        if head is None:
            return
        until = head.get("ObjectLockRetainUntilDate")
        if until is not None and until > datetime.now(UTC):
            raise errors.ObjectLocked(
                f"s3://{self.bucket}/{full} is under {head.get('ObjectLockMode', 'Object Lock')} retention "
                f"until {until:%Y-%m-%d %H:%M} UTC",
                until=until,
                hint="Object Lock keeps it until then; prune removes it on a run after that date",
                runbook=RUNBOOK,
            )
        # Deleting the version, not the key: on a versioned bucket a plain DELETE only adds a delete marker,
        # and the bytes that prune means to free would stay behind as a noncurrent version.
        version = {"VersionId": head["VersionId"]} if head.get("VersionId") not in (None, "null") else {}
        with aws.mapped(f"delete s3://{self.bucket}/{full}", runbook=RUNBOOK):
            self.client.delete_object(Bucket=self.bucket, Key=full, **version)


class _Reader:
    """A botocore StreamingBody as a file-like reader with errors mapped."""

    def __init__(self, body: Any, name: str) -> None:
        self._body = body
        self.name = name

    def read(self, size: int = -1, /) -> bytes:
        with aws.mapped(f"read {self.name}", runbook=RUNBOOK):
            data: bytes = self._body.read(None if size < 0 else size)
        return data


class _S3Upload:
    """Multipart upload: parts are sent from a small thread pool while the caller keeps writing."""

    def __init__(self, store: S3Store, key: str) -> None:
        self.store, self.key = store, key
        self.name = f"s3://{store.bucket}/{key}"
        with aws.mapped(f"start an upload to {self.name}", runbook=RUNBOOK):
            reply = store.client.create_multipart_upload(Bucket=store.bucket, Key=key, **store.options.put_args())
        self.upload_id: str = reply["UploadId"]
        self._buffer = bytearray()
        self._parts: list[futures.Future[dict[str, Any]]] = []
        self._pool = futures.ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="dr-s3-part")
        self._slots = threading.Semaphore(PARTS_IN_FLIGHT)
        self._done = False

    def _send(self, number: int, data: bytes) -> dict[str, Any]:
        try:
            checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
            with aws.mapped(f"upload part {number} of {self.name}", runbook=RUNBOOK):
                reply = self.store.client.upload_part(
                    Bucket=self.store.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    PartNumber=number,
                    Body=data,
                    ChecksumSHA256=checksum,
                )
            return {"PartNumber": number, "ETag": reply["ETag"], "ChecksumSHA256": checksum}
        finally:
            self._slots.release()

    def _flush(self, final: bool = False) -> None:
        while len(self._buffer) >= PART_SIZE or (final and (self._buffer or not self._parts)):
            part = bytes(self._buffer[:PART_SIZE])
            del self._buffer[:PART_SIZE]
            self._slots.acquire()  # back-pressure: at most PARTS_IN_FLIGHT parts in memory
            failed = next((f for f in self._parts if f.done() and f.exception()), None)
            if failed is not None:
                self._slots.release()
                failed.result()
            self._parts.append(self._pool.submit(self._send, len(self._parts) + 1, part))
            if final and not self._buffer:
                break

    def write(self, data: bytes) -> int:
        self._buffer += data
        try:
            self._flush()
        except BaseException:
            self.abort()
            raise
        return len(data)

    def commit(self) -> None:
        try:
            self._flush(final=True)
            parts = [f.result() for f in self._parts]
            with aws.mapped(f"complete the upload of {self.name}", runbook=RUNBOOK):
                self.store.client.complete_multipart_upload(
                    Bucket=self.store.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._pool.shutdown()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception as exc:  # best effort: S3 lifecycle rules remove abandoned uploads anyway
            if not aws.is_aws_error(exc):
                raise


def open_store(
    url: str,
    *,
    s3_endpoint: str | None = None,
    s3_region: str | None = None,
    s3_options: S3Options | None = None,
    read_only: bool = False,
) -> Store:
    """The store a URL names: `file:///path`, a plain path, or `s3://bucket/prefix`."""
    parsed = urlparse(url)
    path = parsed.path if parsed.scheme else url
    if ".." in Path(path).parts:
        # `file:///../x` is `/x`, and `../x` depends on the cwd of whoever runs it (a CronJob, an operator):
        # a store is where the only copy of the platform's secrets goes, so it is named exactly.
        raise errors.ConfigError(
            f"store URL {url!r} contains '..'",
            hint="name the store by its absolute path (file:///var/backups/vault) or an s3://bucket/prefix",
        )
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise errors.ConfigError(f"store URL {url!r} has no bucket", hint="use s3://bucket/prefix")
        return S3Store(
            parsed.netloc,
            parsed.path,
            endpoint_url=s3_endpoint,
            region=s3_region,
            options=s3_options,
            read_only=read_only,
        )
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise errors.ConfigError(f"store URL {url!r} names a host; use file:///absolute/path")
        return FileStore(Path(parsed.path), read_only=read_only)
    if parsed.scheme == "":
        return FileStore(Path(url), read_only=read_only)
    raise errors.ConfigError(
        f"store URL {url!r} has an unknown scheme {parsed.scheme!r}", hint="use file:///path or s3://bucket/prefix"
    )
