"""One writer per run: an advisory lock on a file in the run, held for the whole of training.

`writer_lock(run)` takes `flock` on `<run>/.lock` without waiting: a second writer (two
`labkit pretrain --name same`, two `--resume`) is refused with one line that names the process
holding it. The OS releases the lock when that process ends, however it ends, so a SIGKILL never
leaves a stale lock. Readers (the app, `labkit runs`) never take it: they read whole lines and
files replaced atomically.

The lock is taken before anything is checked or written. When it made the run's folder and the
run never started (no card yet: a bad setting, a full disk, Ctrl-C while the data loads), the
folder is removed before the lock is let go, so nothing half-made is left, and nothing that
another process made is ever removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from labkit.atomic import parse_json, read_bounded
from labkit.errors import LabkitError, RunError
from labkit.runs.layout import RunDir, write_error

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are written unlocked there
    fcntl = None

LOCK = ".lock"
OPEN = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)


@dataclass
class RunLock:
    run: RunDir
    fd: int
    created: bool  # this process made the run's folder

    @property
    def path(self) -> Path:
        return self.run.root / LOCK

    def release(self) -> None:
        """Remove the lock file (still ours: nobody else can hold it), then let go of the lock."""
        with contextlib.suppress(OSError):
            if os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        os.close(self.fd)


def acquire(run: RunDir) -> RunLock:
    """The run's lock, or a RunError naming the process that holds it. Makes the folder if needed."""
    path = run.root / LOCK
    for _ in range(100):  # tries: a remover may take the folder away between two steps
        try:
            created = _make_folder(run.root)
            fd = os.open(path, OPEN, 0o666)
        except FileNotFoundError:  # the folder was removed meanwhile: make it again
            continue
        except OSError as e:
            raise write_error(path, e) from None
        if fcntl is None:
            return RunLock(run, fd, created)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunError(f"{run.root} is being written by {holder(path)}: let it finish, or stop it, "
                           "then try again") from None
        # The file locked must still be the one at `path`: the run may have been removed (and
        # made again) between the open and the lock; then try again.
        with contextlib.suppress(OSError):
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                return _sign(RunLock(run, fd, created))
        os.close(fd)
    raise RunError(f"cannot lock {path}: the folder keeps disappearing; is something removing it?")


def _make_folder(root: Path) -> bool:
    try:
        root.mkdir(parents=True)
        return True
    except FileExistsError:
        return False


def _sign(lock: RunLock) -> RunLock:
    """Write who holds the lock into its file, for a refused writer's message."""
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command()}
    try:
        os.ftruncate(lock.fd, 0)
        os.write(lock.fd, (json.dumps(me) + "\n").encode())
    except OSError as e:
        lock.release()
        raise write_error(lock.path, e) from None
    return lock


@contextlib.contextmanager
def writer_lock(run: RunDir) -> Iterator[RunLock]:
    """Hold the run's lock for the block; also refuse a run with a link that leads out of it.
    A run this lock made that never started (no card) is removed if the block fails."""
    lock = acquire(run)
    try:
        run.check_confined()
        yield lock
    except BaseException:
        if lock.created and not os.path.lexists(run.card_path):
            _discard(run)
        raise
    finally:
        lock.release()


def remove_run(run: RunDir | str | os.PathLike) -> None:
    """Delete a run (a RunDir or its folder), unless a process is writing it (a RunError that
    names that process). A run folder that is a link: the link alone is removed."""
    run = run if isinstance(run, RunDir) else RunDir(run)  # (a Path's own .root is "/" or "")
    if run.root.is_symlink():
        run.root.unlink()
        return
    lock = acquire(run)
    try:
        _discard(run)
    finally:
        lock.release()


def _discard(run: RunDir) -> None:
    """Rename the folder aside (the lock held), then delete it."""
    aside = run.root.with_name(f".tmp-discard-{os.getpid()}-{run.root.name[:100]}")
    with contextlib.suppress(OSError):
        os.replace(run.root, aside)
        shutil.rmtree(aside, ignore_errors=True)


def holder(path: Path) -> str:
    """Who holds the lock at `path`, as its holder wrote it ("process 4242 (labkit pretrain ...)")."""
    for _ in range(20):  # the holder writes its name just after taking the lock
        try:
            info = parse_json(read_bounded(path, 4096, "lock file"))
        except (OSError, ValueError, LabkitError):
            info = None
        if isinstance(info, dict) and isinstance(info.get("pid"), int):
            host = info.get("host")
            where = f" on {host}" if host and host != socket.gethostname() else ""
            return f"process {info['pid']}{where} ({info.get('command') or '?'})"
        time.sleep(0.05)
    return "another process"


def command() -> str:
    """This process's command line, short: "labkit pretrain --name x" for the labkit command."""
    first = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if first in ("labkit", "__main__.py"):
        first = "labkit"
    return " ".join([first, *sys.argv[1:]])[:200]
