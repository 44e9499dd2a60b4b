"""Training curves from a run's metrics: the series to plot, and TensorBoard's smoothing.

The metrics file holds training records (`loss`, `ppl` every `log_every` steps), validation
records (`val_loss`, `val_ppl`) and one test record; each carries `step`, `tokens` and
`elapsed_s` (training wall time), any of which can be the x axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.runs import run_metrics

X_AXES = {"step": "step", "tokens seen": "tokens", "training time (s)": "elapsed_s"}
METRICS = {"loss": ("loss", "val_loss"), "perplexity": ("ppl", "val_ppl")}


def ema(values: Sequence[float | None], weight: float) -> list[float | None]:
    """TensorBoard's de-biased exponential moving average (its "smoothing" slider).

    last = weight * last + (1 - weight) * value, divided by (1 - weight ** n) after n finite
    values, so the first points are not pulled towards the 0 the average starts from.
    Non-finite values (None, NaN, inf) pass through unsmoothed and do not enter the average;
    a constant series is returned as it is, as TensorBoard does.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    finite = [v for v in values if _finite(v)]
    if finite and all(v == finite[0] for v in finite):
        return list(values)
    out: list[float | None] = []
    last, n = 0.0, 0
    for v in values:
        if not _finite(v):
            out.append(v)
            continue
        last = last * weight + (1.0 - weight) * float(v)
        n += 1
        out.append(last / (1.0 - weight ** n))
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class Series:
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)


@dataclass
class RunCurves:
    train: Series
    val: Series


def run_curves(records: list[dict[str, Any]], x_axis: str = "step", metric: str = "loss") -> RunCurves:
    """Training and validation series of one run; `x_axis` and `metric` are keys of `X_AXES`
    and `METRICS`. Records lacking the x value or the metric (a test record) are skipped."""
    x_key = X_AXES.get(x_axis, x_axis)
    train_key, val_key = METRICS[metric]
    train, val = Series(), Series()
    for r in records:
        x = r.get(x_key)
        if not _finite(x):
            continue
        if _finite(r.get(train_key)) or (train_key in r and r[train_key] is None):
            train.x.append(x)
            train.y.append(r[train_key] if _finite(r[train_key]) else math.nan)
        elif _finite(r.get(val_key)):
            val.x.append(x)
            val.y.append(r[val_key])
    return RunCurves(train, val)


def load_curves(run_path: str | Path, x_axis: str = "step", metric: str = "loss") -> RunCurves:
    """`run_curves` of a run directory (a missing or half-written metrics file is fine)."""
    return run_curves(run_metrics(run_path), x_axis, metric)
