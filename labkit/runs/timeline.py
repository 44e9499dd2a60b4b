"""The timeline file of a run: a small snapshot of the model at each evaluation, appended while
training runs, so that a viewer can watch it learn (labkit.inspect.timeline reads it; the
recorder that writes it is labkit.recorder).

One JSON object per line, written and read as the metrics file is (labkit.runs.metrics): each
line appended whole, a torn last line skipped by readers and cut by the next writer. The first
line names the fixed sentence the snapshots look at; every other line is one snapshot with its
`step`. Resuming a run drops the snapshots the run is about to compute again, as it does with
its metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labkit.runs.layout import TIMELINE, RunDir
from labkit.runs.metrics import MetricsWriter, iter_metrics


def timeline_path(run: str | Path | RunDir) -> Path:
    root = run.root if isinstance(run, RunDir) else Path(run)
    return root / TIMELINE


class TimelineWriter(MetricsWriter):
    """Appends timeline records (`write`) to a run's timeline file."""

    def __init__(self, run: str | Path | RunDir):
        super().__init__(timeline_path(run))

    def drop_from(self, step: int) -> None:
        """Drop the snapshots at `step` and after (the header line stays)."""
        self.truncate_after(step - 1)


def read_timeline_records(run: str | Path | RunDir) -> list[dict[str, Any]]:
    """The whole, valid lines of a run's timeline (none, or no file yet: an empty list)."""
    return list(iter_metrics(timeline_path(run)))
