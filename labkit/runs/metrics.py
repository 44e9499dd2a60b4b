"""`metrics.jsonl`: one JSON object per line, appended while training runs.

Each record is written with a single `write` of a whole line on a file opened for append, so a
viewer reading the file while it grows sees whole lines; a reader still skips a last line that
has no newline yet (a writer killed mid-write), so a torn line can never break a viewer. A
write that fails (disk full, read-only) is cut back to the last whole line and raised as a
RunError. The writer opens the file itself, never a link (one that leads out of the run is refused),
and only a regular file; readers skip whatever is not one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labkit.atomic import parse_json, read_bounded, write_atomic
from labkit.errors import LabkitError, RunError
from labkit.runs.layout import LIMITS, METRICS, RunDir, write_error, writing

NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)  # never a link; never wait on a FIFO
TAIL = 1 << 16  # the metrics file is read back from its end this much at a time, for a torn line


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; write them as null rather than producing invalid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsWriter:
    """Appends records to the metrics file of the run that holds it (a RunError if the file leads
    out of the run, or is not a regular file)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.target = RunDir(self.path.parent).confined(self.path)  # links resolved, inside the run
        self._drop_torn_tail()

    def _open(self, flags: int) -> int:
        fd = os.open(self.target, flags | NO_FOLLOW, 0o666)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise RunError(f"{self.path} is not a regular file: move it away, then try again")
        if flags & (os.O_WRONLY | os.O_RDWR) and info.st_nlink > 1:  # a hard link: the same bytes elsewhere too
            os.close(fd)
            raise RunError(f"{self.path} has {info.st_nlink} names (a hard link to a file outside the run, "
                           "maybe): labkit will not write through it; replace it with a copy (cp), then try again")
        return fd

    def _drop_torn_tail(self) -> None:
        """A writer killed mid-line leaves a fragment; cut it so the next record starts clean."""
        try:
            fd = self._open(os.O_RDONLY)
        except FileNotFoundError:
            return
        except OSError as e:
            raise write_error(self.path, e) from None
        try:
            size = os.fstat(fd).st_size
            if size > LIMITS[METRICS]:
                raise RunError(f"{self.path} is larger than a {self.path.name} may be ({LIMITS[METRICS] >> 20} MiB): "
                               "move it away, then try again")
            end = _after_last_newline(fd, size)
        finally:
            os.close(fd)
        if end < size:
            with writing(self.path):
                fd = self._open(os.O_WRONLY)
                try:
                    os.ftruncate(fd, end)
                finally:
                    os.close(fd)

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps({k: _clean(v) for k, v in record.items()}, sort_keys=False) + "\n").encode()
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = self._open(os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                size = os.fstat(fd).st_size
                try:
                    if os.write(fd, line) != len(line):
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                except OSError:
                    with contextlib.suppress(OSError):  # no half line left behind
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (used on resume, so replayed steps are not logged twice)."""
        if not os.path.lexists(self.target):
            return
        try:
            data = read_bounded(self.target, LIMITS[METRICS], self.path.name)
            kept = [json.dumps(r) + "\n" for r in _records(data) if _step(r) is not None and _step(r) <= step]
        except LabkitError as e:
            raise RunError(str(e)) from None
        with writing(self.path):
            write_atomic(self.target, "".join(kept))


def _step(record: dict[str, Any]) -> float | None:
    """A record's step, when it is a number (a damaged record's is not: it is dropped on resume)."""
    step = record.get("step", 0)
    ok = isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step)
    return step if ok else None


def _after_last_newline(fd: int, size: int) -> int:
    """The offset just past the file's last newline (0 if it has none), read from the end."""
    end = size
    while end > 0:
        start = max(0, end - TAIL)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_metrics(path))


def iter_metrics(path: str | Path) -> Iterator[dict[str, Any]]:
    """Whole, valid records only: a torn or damaged line is skipped, never raised, and so is a
    file that is no file (a FIFO, a device, a link out of its run) or far too large."""
    path = Path(path)
    try:
        RunDir(path.parent).confined(path)
        data = read_bounded(path, LIMITS[METRICS], path.name)
    except (OSError, LabkitError):
        return
    yield from _records(data)


def _records(data: bytes) -> Iterator[dict[str, Any]]:
    for raw in data.split(b"\n")[:-1]:  # the piece after the last newline is incomplete
        try:
            record = parse_json(raw)
        except ValueError:
            continue
        if isinstance(record, dict) and all(_plain(v) for v in record.values()):
            yield record


def _plain(value: Any) -> bool:
    """A value labkit writes: a string, a bool, None, a number a float can hold (a 400-digit integer is
    damage: it overflows every reader's arithmetic), or a list or dict of such."""
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 2**63
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    return True


def run_metrics(run_path: str | Path) -> list[dict[str, Any]]:
    """The records of the run directory at `run_path` (none yet: an empty list)."""
    return read_metrics(RunDir(run_path).metrics_path)
