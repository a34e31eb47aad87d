"""Atomic file output: every result is written to a temporary name and moved into place."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gmmpipe.errors import StorageError

#: Errors of writing that are about the storage, not the program: said in one line.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
#: Free bytes below which a failed writer (CmdStan) is taken to have run out of space.
LOW_SPACE_BYTES = 1 << 20


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, else remove it.

    Works for files and directories, so a reader never sees a half-written output. A full
    disk, a read-only or a non-writable directory raise :class:`StorageError` naming it.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as err:
        raise storage_error(target, err, setup=True) or err from None
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException as err:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        translated = storage_error(target, err) if isinstance(err, OSError) else None
        if translated is not None:
            raise translated from None
        raise


def storage_error(target: Path, err: OSError, *, setup: bool = False) -> StorageError | None:
    """`err` as one line naming the directory, when the storage is to blame (no space, a
    read-only file system; while creating the output, also a non-writable directory)."""
    codes = (*STORAGE_ERRNOS, errno.EACCES, errno.EPERM) if setup else STORAGE_ERRNOS
    if err.errno not in codes:
        return None
    directory = Path(err.filename).parent if err.filename else target.parent
    return StorageError(f"cannot write {target}: {_reason(err.errno)} in {directory}")


def storage_problem(directory: str | os.PathLike[str]) -> str | None:
    """Why writing into `directory` fails, if the storage is the cause: no space left on its
    device (below :data:`LOW_SPACE_BYTES` free), a read-only or a non-writable directory."""
    directory = Path(directory)
    try:
        stat = os.statvfs(directory)
    except OSError:
        return None
    if stat.f_flag & os.ST_RDONLY:
        return f"{_reason(errno.EROFS)} in {directory}"
    if not os.access(directory, os.W_OK):
        return f"{_reason(errno.EACCES)} in {directory}"
    free = stat.f_bavail * stat.f_frsize
    if free < LOW_SPACE_BYTES:
        return f"{_reason(errno.ENOSPC)} in {directory} ({free} bytes free)"
    return None


def _reason(code: int) -> str:
    """'no space left on device', 'read-only file system', ... (the C library's words)."""
    return os.strerror(code)[0].lower() + os.strerror(code)[1:]


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of `path` that an interrupted writer (kill -9) left behind.

    Each output has one writer at a time (Snakemake runs one job per output), so any
    ``.<name>.XXXXXXXX.tmp`` beside `path` belongs to an earlier, dead attempt.
    """
    target = Path(path)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}\.tmp")
    removed = []
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        if not pattern.fullmatch(stale.name):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(
    path: str | os.PathLike[str], frame: Any, *, index: bool = False, **kwargs: Any
) -> None:
    """Write a pandas DataFrame as CSV (without its index unless `index`), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index, **kwargs)


def file_checksum(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's contents, as ``sha256:<hex>``."""
    with Path(path).open("rb") as fh:
        return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars and arrays for JSON."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
