"""Archives (zip, tar.gz) read safely, and their contents put in place all at once.

labkit never extracts an archive onto the disk by its own member names: it reads the members it
knows and writes them under names of its own. Even so an archive is refused whole when a member's
name is absolute or climbs out with ``..`` (path traversal), and when a member is a link or a
device rather than a regular file or a folder: a corpus archive has no use for them.

`Staging` writes the new files as temporary files in the destination folder and renames them into
place only when every one of them is complete (and verified): a failure leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from labkit.atomic import make_temporary_file
from labkit.errors import ChecksumError, DataNotFoundError

CHUNK = 1 << 16


class UnsafeArchiveError(DataNotFoundError):
    """An archive with a member labkit will not read: an absolute path, ``..``, a link, a device."""


def check_member(name: str, archive: Path) -> None:
    """An UnsafeArchiveError when `name` is absolute or holds a ``..`` part."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix) or ".." in PurePosixPath(posix).parts:
        raise UnsafeArchiveError(f"{archive.name} holds a member named {name[:100]!r} (an absolute path or '..'): "
                                 "refused; delete it and download it again from the canonical source")


def _not_a_file(name: str, archive: Path) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{archive.name} holds {name[:100]!r}, a link or device, not a regular file: refused; "
                              "delete it and download it again from the canonical source")


def _not_expected(archive: Path, kind: str, e: BaseException) -> DataNotFoundError:
    return DataNotFoundError(f"{archive.name} is not the expected {kind} ({e}); delete it and try again, "
                             "or use another mirror")


class Staging:
    """New files for `folder`, written as temporary files there, renamed into place by `commit`;
    whatever was not committed is deleted when the block ends."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.parts: dict[str, str] = {}  # final name -> temporary path

    def __enter__(self) -> Staging:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def new(self, name: str) -> IO[bytes]:
        path = make_temporary_file(self.folder, f".{name}.", ".tmp")  # mode 0666 less the umask, as open() makes
        self.parts[name] = str(path)
        return open(path, "wb")

    def commit(self) -> None:
        for name, tmp in self.parts.items():
            os.replace(tmp, self.folder / name)
        self.parts = {}

    def __exit__(self, *exc) -> None:
        for tmp in self.parts.values():
            Path(tmp).unlink(missing_ok=True)


def extract_zip(archive: Path, members: dict[str, str], folder: Path,
                specs: dict[str, tuple[str, int] | None]) -> None:
    """Copy the zip members `members` (new name -> member name) into `folder` under their new
    names, each checked against its (sha256, size) in `specs` when pinned; all or none."""
    try:
        with zipfile.ZipFile(archive) as zf, Staging(folder) as staging:
            infos = zf.infolist()
            for info in infos:
                check_member(info.filename, archive)
                if stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no type said
                    raise _not_a_file(info.filename, archive)
            for name, member in members.items():
                h, n = hashlib.sha256(), 0
                with zf.open(member) as src, staging.new(name) as out:
                    for chunk in iter(lambda: src.read(CHUNK), b""):
                        out.write(chunk)
                        h.update(chunk)
                        n += len(chunk)
                spec = specs.get(name)
                if spec is not None and (h.hexdigest(), n) != spec:
                    raise ChecksumError(f"{member} in {archive.name} has sha256 {h.hexdigest()} ({n:,} bytes), "
                                        f"expected {spec[0]} ({spec[1]:,} bytes)")
            staging.commit()
    except (zipfile.BadZipFile, KeyError, zlib.error, EOFError) as e:
        raise _not_expected(archive, "zip", e) from e


def tar_files(archive: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """(name, readable file) for each regular file of a tar archive (gzip or not), in archive
    order, read as a stream; an unsafe member refuses the archive when it is met."""
    try:
        with tarfile.open(archive, "r|*") as tf:
            for member in tf:
                check_member(member.name, archive)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise _not_a_file(member.name, archive)
                yield member.name, tf.extractfile(member)
    except (tarfile.TarError, zlib.error, EOFError) as e:
        raise _not_expected(archive, "tar archive", e) from e
