"""TensorBoard scalars from labkit's metrics records, written with the `tensorboard` package's own
writer (`tensorboard.summary.Writer`: neither TensorFlow nor torch.utils.tensorboard).

Each number in a record becomes a scalar at the record's step: training fields as `train/<field>`,
validation ones (`val_*`) as `val/<field>`, test ones (`test_*`) as `test/<field>` (values as
float32, TensorBoard's own precision). Live while a run
trains (`TensorBoardCallback`: `labkit pretrain --tensorboard DIR`), or afterwards from a run's
metrics file (`export_tensorboard`: `labkit export RUN --format tensorboard DIR`). Both write into
DIR/<run name>/, so `tensorboard --logdir DIR` shows the runs side by side, by name.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.interop.folders import new_folder
from labkit.runs import RunDir, iter_metrics, read_metrics

GROUPS = (("val_", "val"), ("test_", "test"))


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's numbers by TensorBoard tag (the step, and anything not a finite number, left out).
    An evaluation record's other fields (tokens, elapsed_s) repeat its step's: only val_/test_ ones count."""
    evaluation = any(key.startswith(prefix) for key in record for prefix, _ in GROUPS)
    out = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        group, name = next(((g, key[len(p):]) for p, g in GROUPS if key.startswith(p)), ("train", key))
        if group != "train" or not evaluation:
            out[f"{group}/{name}"] = float(value)
    return out


def write_record(writer: Any, record: dict[str, Any], wall_time: float | None = None) -> None:
    step = record.get("step")
    if isinstance(step, int) and not isinstance(step, bool):
        for tag, value in scalars(record).items():
            writer.add_scalar(tag, value, step, wall_time=wall_time)


def writer(folder: Path) -> Any:
    from tensorboard.summary import Writer

    return Writer(str(folder))


class TensorBoardCallback:
    """A Trainer callback writing every metrics record to TensorBoard as it is logged; the test
    record (written just before the run ends) at the end. Only the main process writes."""

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.writer: Any = None

    def write(self, trainer: Any, record: dict[str, Any]) -> None:
        if not trainer.dist.is_main:
            return
        if self.writer is None:
            folder = self.logdir / (trainer.run.name if trainer.run is not None else "")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LabkitError(f"--tensorboard: cannot write {folder}: {e.strerror or e}") from None
            self.writer = writer(folder)
        write_record(self.writer, record)
        self.writer.flush()  # a TensorBoard watching the folder sees each record as it comes

    on_step = on_eval = write

    def on_end(self, trainer: Any, card: dict[str, Any]) -> None:
        if trainer.run is not None:
            tests = [r for r in iter_metrics(trainer.run.metrics_path)
                     if r.get("step") == card.get("steps") and any(k.startswith("test_") for k in r)]
            if tests:
                self.write(trainer, tests[-1])
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def export_tensorboard(run: str | Path, out: str | Path) -> Path:
    """The records of the run `run` as TensorBoard scalars in out/<run name>/ (which must not exist)."""
    run = RunDir(run)
    if not run.exists():
        raise LabkitError(f"{run.root} is not a labkit run (it has no config)")
    records = read_metrics(run.metrics_path)
    if not records:
        raise LabkitError(f"{run.root} has no metrics records (an imported run, or one not started): nothing to export")
    card = run.read_card() if run.card_path.is_file() else {}
    end, took = card.get("updated_at"), card.get("wall_time_s")
    start = end - took if isinstance(end, (int, float)) and isinstance(took, (int, float)) \
        else run.metrics_path.stat().st_mtime - float(records[-1].get("elapsed_s") or 0)
    target = Path(out) / run.name
    with new_folder(target) as tmp:
        w = writer(tmp)
        for record in records:
            elapsed = record.get("elapsed_s")
            write_record(w, record, start + elapsed if isinstance(elapsed, (int, float)) else None)
        w.close()
    return target
