"""`metrics.jsonl`: one JSON object per line, appended while training runs.

Each record is written with a single `write` of a whole line on a file opened for append, so a
viewer reading the file while it grows sees whole lines; a reader still skips a last line that
has no newline yet (a writer killed mid-write), so a torn line can never break a viewer. A
write that fails (disk full, read-only) is cut back to the last whole line and raised as a
RunError.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labkit.atomic import write_atomic
from labkit.runs.layout import RunDir, write_error, writing


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; write them as null rather than producing invalid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsWriter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        """A writer killed mid-line leaves a fragment; cut it so the next record starts clean."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            raise write_error(self.path, e) from None
        if data and not data.endswith(b"\n"):
            with writing(self.path), open(self.path, "rb+") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps({k: _clean(v) for k, v in record.items()}, sort_keys=False) + "\n").encode()
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
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
        if not self.path.exists():
            return
        kept = [json.dumps(r) + "\n" for r in read_metrics(self.path) if r.get("step", 0) <= step]
        with writing(self.path):
            write_atomic(self.path, "".join(kept))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_metrics(path))


def iter_metrics(path: str | Path) -> Iterator[dict[str, Any]]:
    """Whole, valid records only: a torn or corrupt line is skipped, never raised."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return
    for raw in data.split(b"\n")[:-1]:  # the piece after the last newline is incomplete
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict):
            yield record


def run_metrics(run_path: str | Path) -> list[dict[str, Any]]:
    """The records of the run directory at `run_path` (none yet: an empty list)."""
    return read_metrics(RunDir(run_path).metrics_path)
