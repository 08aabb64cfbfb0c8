"""Atomic file replacement: readers see the old file or the new one, never a torn one.

Checkpoints, snapshot manifests and metrics textfiles are all read by
someone else while they may be rewritten (`dr status` in another
terminal, a node-exporter, an operator's `cat`), and any of them may be
cut by SIGKILL or a full disk.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from dr import errors


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable: without it a power cut can undo the rename."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path,
    payload: bytes,
    *,
    mode: int = 0o600,
    error: type[errors.DRError] = errors.PermanentError,
    create_only: bool = False,
) -> None:
    """Replace `path` with `payload` so that readers never see a partial file.

    tmp file (unique name, created with `mode`) → write → fsync → rename →
    fsync the directory. On any failure the old file is untouched and the
    tmp file is removed. `create_only` links instead of renaming, so that of
    two writers of the same path exactly one wins and the other gets
    `AlreadyExists` (S3's `If-None-Match: *`, on a filesystem).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if create_only:
            try:
                os.link(tmp, path)
            finally:
                tmp.unlink()
        else:
            tmp.replace(path)
        fsync_dir(path.parent)
    except FileExistsError:
        raise errors.AlreadyExists(
            f"{path} already exists", hint="another writer created it first; nothing was overwritten"
        ) from None
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise error(f"cannot write {path}: {exc.strerror or exc}") from exc
