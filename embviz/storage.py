"""Atomic file writes: temp file in the same directory, fsync, then rename over the target."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DiskFullError

__all__ = [
    "DISK_FULL_REASONS",
    "atomic_write_bytes",
    "atomic_write_json",
    "disk_full",
    "file_lock",
    "write_parquet_atomic",
]

#: The errnos that mean "no room to write", and how the error message words each.
DISK_FULL_REASONS = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "a file-size limit was hit (file too large; see ulimit -f)",
}


@contextlib.contextmanager
def disk_full(path: str | os.PathLike | None, what: str = "this file") -> Iterator[None]:
    """Raise :class:`~embviz.errors.DiskFullError` naming ``path`` (and ``what`` was being
    written) when the block fails for want of space; other errors pass through unchanged.

    Arrow's write errors carry the errno but not the file name, hence ``path``; None names
    the file the error names, if any.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL_REASONS:
            raise
        where = exc.filename if path is None else path
        where = where or "(a file the error does not name)"
        raise DiskFullError(str(where), DISK_FULL_REASONS[exc.errno], what) from exc


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the new one, never half."""
    path = Path(path)
    with disk_full(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Serialise ``obj`` as indented JSON and write it atomically."""
    atomic_write_bytes(
        path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode()
    )


def write_parquet_atomic(
    table, path: str | os.PathLike, *, row_group_size: int | None = None
) -> None:
    """Write a pyarrow ``table`` as Parquet to ``path`` atomically (zstd, statistics on)."""
    import pyarrow.parquet as pq

    path = Path(path)
    with disk_full(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
