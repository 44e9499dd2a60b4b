"""Run a notebook headless with a real kernel (nbclient), cell by cell: the notebook tests
(tests/notebooks) and the GPU check (benchmarks/gpu_check.py) run them this way. nbclient and
ipykernel are development dependencies (`pip install -e '.[dev]'`).

    python -m labkit.notebook_exec notebooks/04_rnn_vs_transformer.ipynb --json result.json

The kernel inherits the environment (LABKIT_PROFILE, LABKIT_SCALE, LABKIT_RUNS, ...). The JSON
says whether every cell ran, each cell's seconds, the first error, what the first cell that printed
anything printed (labkit.notebook.start: profile, device, data) and the closing summary; it is rewritten
after every cell, so a run stopped from outside still says how far it got. Exit status 1 when a
cell failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from queue import Empty
from typing import Any

from labkit.atomic import write_atomic


def poll_in_slices(channel: Any, slice_s: float = 0.5) -> None:
    """Make a kernel client channel's `get_msg` wait in short slices.

    Seen here and reported upstream (jupyter/nbclient#312): with widgets in a cell, a reply that
    has arrived can go unnoticed until `get_msg`'s whole timeout runs out, so a 15-second
    notebook took 315 s, or hung with no timeout. A new poll notices the waiting message, so
    polling in short slices bounds that delay to one slice."""
    original = channel.get_msg

    async def get_msg(timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = slice_s if deadline is None else max(0.0, min(slice_s, deadline - time.monotonic()))
            try:
                return await original(timeout=step)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    channel.get_msg = get_msg


def execute(nb: Any, path: Path, *, timeout: float | None = None,
            on_cell: Callable[[int, float], None] | None = None) -> list[float]:
    """Run every cell of `nb` (read from `path`: its folder is the kernel's working directory) in
    place, each within `timeout` seconds; returns each cell's seconds, and hands them to
    `on_cell(index, seconds)` as they finish. Raises nbclient's CellExecutionError, with the
    traceback, at the first cell that fails."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(path).parent)}})
    seconds = []
    with client.setup_kernel():
        poll_in_slices(client.kc.shell_channel)
        poll_in_slices(client.kc.iopub_channel)
        for i, cell in enumerate(nb.cells):
            start = time.perf_counter()
            client.execute_cell(cell, i)
            seconds.append(time.perf_counter() - start)
            if on_cell:
                on_cell(i, seconds[-1])
    return seconds


def printed(cell: Any) -> str:
    """What a code cell wrote: its streams, else its last markdown or plain-text output."""
    outputs = cell.get("outputs", [])
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    if text or not outputs:
        return text
    data = outputs[-1].get("data", {})
    return data.get("text/markdown") or data.get("text/plain") or ""


def run(path: Path, out: Path | None = None, *, timeout: float | None = None) -> dict[str, Any]:
    """`path` run whole (see `execute`); the record described at the top, written to `out` after
    every cell when given."""
    import nbformat
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    record: dict[str, Any] = {"notebook": path.stem, "ok": False, "seconds": 0.0, "cells": len(nb.cells),
                              "cells_run": 0, "cell_seconds": [], "error": None, "start": "", "summary": ""}
    began = time.perf_counter()

    def save(*_: Any) -> None:
        texts = [printed(c) for c in nb.cells if c.cell_type == "code"]
        record.update(seconds=round(time.perf_counter() - began, 2), cells_run=len(record["cell_seconds"]),
                      start=next(filter(None, texts), ""), summary=texts[-1] if texts else "")
        if out:
            write_atomic(out, json.dumps(record, indent=2) + "\n")

    def on_cell(index: int, seconds: float) -> None:
        record["cell_seconds"].append(round(seconds, 2))
        save()

    save()
    try:
        execute(nb, path, timeout=timeout, on_cell=on_cell)
        record["ok"] = True
    except CellExecutionError as e:
        record["error"] = {"cell": len(record["cell_seconds"]), "ename": e.ename, "evalue": e.evalue,
                           "traceback": str(e)[-3000:]}
    except Exception as e:  # the kernel died or never started, a cell timed out: said, not raised
        record["error"] = {"cell": len(record["cell_seconds"]), "ename": type(e).__name__, "evalue": str(e)[-3000:]}
    save()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.notebook_exec", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--json", type=Path, help="write the record here (default: print it)")
    parser.add_argument("--cell-timeout", type=float, default=None, help="seconds per cell (default: none)")
    args = parser.parse_args(argv)
    record = run(args.notebook, args.json, timeout=args.cell_timeout)
    if not args.json:
        print(json.dumps(record, indent=2))
    print(f"{record['notebook']}: {'ran' if record['ok'] else 'FAILED'} in {record['seconds']:.1f} s", file=sys.stderr)
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
