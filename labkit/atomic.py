"""Files on disk, the ground floor: atomic writes and bounded reads.

Writes: to a temporary file in the same folder, fsync, then `os.replace` (atomic on POSIX and
Windows), so readers see the old file or the new one, never half of one. A crash or a kill at
any moment leaves at most a stray `.*.tmp` file.

Temporary files and folders are created with mode 0666 / 0777 less the umask, as `open` and
`mkdir` make them (`tempfile.mkstemp` and `mkdtemp` would make them 0600 / 0700, so that a run
written by one user could not be read by the app run by another).

Reads: `read_bounded` reads regular files only (a FIFO would hang the reader, a link to
/dev/zero would fill its memory) and at most a size fixed per kind of file (a tokenizer may be
large, a config is not); `parse_json` turns damaged JSON of any shape, nesting thousands of levels
deep included, into a ValueError with a short reason. Both say which file and why.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError

MiB = 1 << 20
MAX_JSON_DEPTH = 64  # labkit's own files nest a few levels; deeper is damage (and recursion elsewhere)
KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


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


def check_writable(path: str | os.PathLike, what: str = "file") -> None:
    """A LabkitError unless `path` is new, a regular file or a link (which a write replaces, never
    writing through it): a device, a FIFO or a folder there is not labkit's to replace."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode):
        return
    kind = next((name for test, name in KINDS if test(info.st_mode)), "not a regular file")
    raise LabkitError(f"{path} is {kind}, not a file: labkit writes its {what} only to a new path or over a "
                      "regular file; choose another path")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` (which must be new, a regular
    file or a link: `check_writable`), on error it vanishes."""
    path = Path(path)
    check_writable(path)
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


def read_bounded(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """The bytes of the regular file at `path` (links followed), at most `limit` of them.

    Anything else is a LabkitError that names the file and says why: a FIFO, a device, a folder, a
    file larger than `limit`, or one that cannot be read. A missing file is FileNotFoundError."""
    path = Path(path)
    try:
        # Refuse what is not a regular file before opening it (opening a device can act on it);
        # O_NONBLOCK: should the path turn into a FIFO meanwhile, the open does not wait for a writer.
        _check_regular(path, os.stat(path), limit, what)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            _check_regular(path, os.fstat(fd), limit, what)
            data = f.read(limit + 1)
    except (FileNotFoundError, LabkitError):
        raise
    except OSError as e:
        raise LabkitError(f"cannot read the {what} {path}: {e.strerror or e}") from None
    if len(data) > limit:  # it grew while being read
        raise LabkitError(f"the {what} {path} is larger than a {what} may be ({_size(limit)}): it is "
                          f"damaged or not a {what}")
    return data


def check_regular(path: str | os.PathLike, what: str) -> None:
    """A LabkitError unless `path` is a regular file (links followed): for files that a library
    reads itself (safetensors, torch.load), so that a FIFO cannot hang it nor a device feed it."""
    _check_regular(Path(path), os.stat(path), sys.maxsize, what)


def _check_regular(path: Path, info: os.stat_result, limit: int, what: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in KINDS if test(info.st_mode)), "not a regular file")
        link = f" (a link to {os.path.realpath(path)})" if path.is_symlink() else ""
        raise LabkitError(f"the {what} {path}{link} is {kind}, not a file: replace it with the file itself")
    if info.st_size > limit:
        raise LabkitError(f"the {what} {path} is {_size(info.st_size)}, more than a {what} may be "
                          f"({_size(limit)}): it is damaged or not a {what}")


def _size(n: int) -> str:
    return f"{n / MiB:,.1f} MiB" if n >= MiB else f"{n:,} bytes"


def parse_json(data: str | bytes) -> Any:
    """JSON text as Python values. Damage of any shape (not JSON, not UTF-8, nested deeper than
    MAX_JSON_DEPTH levels, which the parser itself would answer with a RecursionError) is a
    ValueError with a short reason."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    if _too_deep(value):
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:  # a loop, not recursion: any depth the parser returned is measured safely
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > MAX_JSON_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def read_json_file(path: str | os.PathLike, limit: int, what: str) -> Any:
    """A JSON file that someone else wrote (a Hugging Face folder's config, a tokenizer, an index):
    a regular file of at most `limit` bytes, nested at most MAX_JSON_DEPTH levels; else a
    LabkitError naming it and why."""
    try:
        return parse_json(read_bounded(path, limit, what))
    except FileNotFoundError:
        raise LabkitError(f"{path} is missing: it is needed as the {what}") from None
    except ValueError as e:
        raise LabkitError(f"{path} is not a readable {what} ({e})") from None


def check_archive(path: str | os.PathLike, what: str, *, ratio: int = 4) -> None:
    """A LabkitError when the zip archive at `path` (torch's file format) declares contents far larger
    than itself: torch writes its entries uncompressed, so `ratio` times the file's size is already
    generous; a small file that would inflate to gigabytes is a zip bomb, refused before it is read.
    A file that is not a zip archive (torch's legacy format) passes: its reader reads no more than it holds."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip (or unreadable here): the loader itself reports it
    size = os.stat(path).st_size
    if declared > ratio * size + MiB:
        raise LabkitError(f"the {what} {path} is {_size(size)} but declares {_size(declared)} of contents: a "
                          "compressed archive (a zip bomb), not a file torch wrote; it is refused unread")
