"""Atomic writes: readers see the old file or the new one, never half of one.

Write to a temporary file in the same folder, fsync, then `os.replace` (atomic on POSIX and
Windows). A crash or a kill at any moment leaves at most a stray `.*.tmp` file.

Temporary files and folders are created with mode 0666 / 0777 less the umask, as `open` and
`mkdir` make them (`tempfile.mkstemp` and `mkdtemp` would make them 0600 / 0700, so that a run
written by one user could not be read by the app run by another).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def temporary_name(folder: Path, prefix: str, suffix: str = "") -> Path:
    return folder / f"{prefix}{secrets.token_hex(6)}{suffix}"


def make_temporary_file(folder: Path, prefix: str, suffix: str) -> Path:
    """A new empty file in `folder`, mode 0666 less the umask (never an existing file or link)."""
    while True:
        path = temporary_name(folder, prefix, suffix)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path


def make_temporary_dir(folder: Path, prefix: str) -> Path:
    """A new empty folder in `folder`, mode 0777 less the umask."""
    while True:
        path = temporary_name(folder, prefix)
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue
        return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temporary_file(path.parent, f".{path.name}.", ".tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
