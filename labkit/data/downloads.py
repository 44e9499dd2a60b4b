"""Downloads over HTTP(S): resumable, with a progress bar, verified before they are put in place.

`download_file(url, dest, sha256, size=...)` writes into ``.<name>.part`` beside ``dest``. A
download that breaks off (a reset, a timeout, a server that hangs up) keeps that partial file,
and the next call asks for the rest with an HTTP Range request (``Range: bytes=<kept>-``): a
server that answers 206 continues it, one that ignores the Range (200) sends it all again and
the partial file starts over. Only a complete file whose size and sha256 match is renamed into
place (atomic); one that does not match is deleted, so the next try starts clean.

One process at a time downloads a file (an advisory ``flock`` on ``.<name>.lock``, where the OS
has one): a second waits for it, then finds the file in place (torchrun's ranks all ask at once).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from labkit import __version__
from labkit.errors import ChecksumError, DataNotFoundError

try:
    import fcntl
except ImportError:  # Windows: no flock; two processes downloading one file at once are not kept apart there
    fcntl = None

CHUNK = 1 << 16
# Some hosts refuse urllib's own agent ("Python-urllib/3.x") with a 403.
USER_AGENT = f"labkit/{__version__}"


def sha256_file(path: Path, h=None):
    """The sha256 object of `path`'s bytes (fed into `h` when given)."""
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h


def partial_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[bool]:
    """Hold an advisory lock on `path` (made here, removed when let go); yields whether another
    process held it first (then what it was making may be in place now)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield False
        return
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not waited:
                print(f"another process is downloading into {path.parent}: waiting for it", file=sys.stderr)
            waited = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # the file locked must still be the one at `path` (the holder removes it as it lets go)
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield waited
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _request(url: str, offset: int) -> urllib.request.Request:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.Request(url, headers=headers)


def _transfer(url: str, part: Path, offset: int, h, *, timeout: float, progress: bool, desc: str):
    """Append the rest of `url` from byte `offset` to `part` (or all of it, from 0, when the server
    ignores the Range); return (the sha256 object of the whole file, its size)."""
    n = offset
    try:
        try:
            resp = urllib.request.urlopen(_request(url, offset), timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code != 416 or not offset:
                raise
            # "Range Not Satisfiable": the kept part is no prefix of what the server has now
            part.unlink(missing_ok=True)
            return _transfer(url, part, 0, hashlib.sha256(), timeout=timeout, progress=progress, desc=desc)
        with resp:
            resumed = offset > 0 and resp.status == 206 and \
                (resp.headers.get("Content-Range") or "").startswith(f"bytes {offset}-")
            if not resumed:  # a whole file (200), or a range that is not the one asked for
                offset, n, h = 0, 0, hashlib.sha256()
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            with open(part, "ab" if resumed else "wb") as out, \
                    tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=desc,
                         disable=not progress) as bar:
                for chunk in iter(lambda: resp.read(CHUNK), b""):
                    out.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise DataNotFoundError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise DataNotFoundError(f"could not reach {url}: {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:  # reset, timeout, bad response
        raise DataNotFoundError(f"download of {url} broke off after {n:,} bytes ({e!r}); "
                                "run it again to resume") from e
    if total is not None and n != total:
        raise DataNotFoundError(f"download of {url} broke off: got {n:,} of {total:,} bytes; run it again to resume")
    return h, n


def download_file(url: str, dest: Path, sha256: str | None, *, size: int | None = None, progress: bool = True,
                  timeout: float = 30) -> Path:
    """Download `url` to `dest` (resuming a partial download), and rename it into place only if
    its sha256 and size match (when pinned: `sha256` None checks nothing). A checksum mismatch
    deletes the partial file; a broken-off transfer keeps it for the next call."""
    dest = Path(dest)
    part = partial_path(dest)
    with locked(dest.with_name(f".{dest.name}.lock")) as waited:
        if waited and dest.is_file():
            return dest
        try:
            kept = part.stat().st_size if part.is_file() else 0
            if size is not None and kept > size:
                part.unlink()
                kept = 0
            h = sha256_file(part) if kept else hashlib.sha256()
            n = kept
            if size is None or kept < size:
                h, n = _transfer(url, part, kept, h, timeout=timeout, progress=progress, desc=dest.name)
            if size is not None and n != size:
                raise ChecksumError(f"{dest.name} from {url} has {n:,} bytes, expected {size:,}")
            if sha256 is not None and (got := h.hexdigest()) != sha256:
                raise ChecksumError(f"{dest.name} from {url} has sha256 {got}, expected {sha256}")
        except ChecksumError:
            part.unlink(missing_ok=True)
            raise
        except BaseException:
            if part.is_file() and part.stat().st_size == 0:
                part.unlink()  # nothing came: nothing to resume
            raise
        os.replace(part, dest)
    return dest
