"""Reading fine-tuning (classifier) runs for viewers, from their cards alone.

A classifier run's card holds `accuracy`, a `confusion_matrix` (rows: true label, columns:
predicted), per-class `precision` / `recall` (a dict by label, or a list), `train_size` and
`labels`. Everything here tolerates missing or odd fields: a card from another version shows
what it has.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkit.inspect.runs import model_label
from labkit.rundir import RunInfo
from labkit.train.metrics import read_metrics

PER_CLASS = ("precision", "recall", "f1")


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def labels_of(info: RunInfo) -> list[str]:
    for source in (info.card or {}, info.config or {}):
        labels = source.get("labels")
        if isinstance(labels, list) and labels:
            return [str(x) for x in labels]
    matrix = confusion_matrix(info)
    return [str(i) for i in range(len(matrix))] if matrix else []


def confusion_matrix(info: RunInfo) -> list[list[float]] | None:
    """The card's confusion matrix if it is a square table of numbers, else None."""
    m = (info.card or {}).get("confusion_matrix")
    if not isinstance(m, list) or not m or not all(isinstance(r, list) and len(r) == len(m) for r in m):
        return None
    values = [[_number(x) for x in row] for row in m]
    return None if any(x is None for row in values for x in row) else values  # type: ignore[misc]


def per_class(info: RunInfo) -> list[dict[str, Any]]:
    """Rows {"label", "precision", "recall", ...} from whichever per-class fields the card has."""
    labels = labels_of(info)
    card = info.card or {}
    rows: dict[str, dict[str, Any]] = {}
    for key in PER_CLASS:
        value = card.get(key)
        if isinstance(value, dict):
            items = [(str(k), v) for k, v in value.items()]
        elif isinstance(value, list):
            items = [(labels[i] if i < len(labels) else str(i), v) for i, v in enumerate(value)]
        else:
            continue
        for label, v in items:
            rows.setdefault(label, {"label": label})[key] = _number(v)
    return list(rows.values())


def summary(info: RunInfo) -> dict[str, Any]:
    """One row per run for the fine-tuning table and the learning curve."""
    card, config = info.card or {}, info.config or {}
    base = card.get("base_run") or config.get("base_run") or ""
    return {"run": info.path.name, "status": card.get("status"),
            "base run": Path(str(base)).name if base else "", "model": model_label(config),
            "mode": card.get("mode"), "train_size": _number(card.get("train_size")),
            "accuracy": _number(card.get("accuracy")), "val_accuracy": _number(card.get("val_accuracy")),
            "steps": card.get("steps"), "wall time (s)": _number(card.get("wall_time_s"))}


def accuracy_curve(run_path: str | Path, key: str = "val_accuracy") -> tuple[list[float], list[float]]:
    """(steps, values) of `key` in the run's metrics.jsonl, if it logs it."""
    xs, ys = [], []
    for r in read_metrics(Path(run_path) / "metrics.jsonl"):
        x, y = _number(r.get("step")), _number(r.get(key))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def load_predictor(run_path: str | Path) -> Callable[[str], tuple[str, float]] | None:
    """sentence -> (label, probability) for a classifier run, through labkit.finetune when it
    offers a way (`predict(path, sentence)` or `Classifier(path).predict`); None otherwise."""
    try:
        from labkit import finetune
    except Exception:  # not there yet, or broken: the page says prediction is unavailable
        return None
    if callable(getattr(finetune, "predict", None)):
        return lambda sentence: as_label_prob(finetune.predict(run_path, sentence))
    if callable(getattr(finetune, "Classifier", None)):
        classifier = finetune.Classifier(run_path)
        return lambda sentence: as_label_prob(classifier.predict(sentence))
    return None


def as_label_prob(result: Any) -> tuple[str, float]:
    """(label, prob) from a tuple or from an object with `.label` and `.prob`."""
    if isinstance(result, tuple) and len(result) >= 2:
        return str(result[0]), float(result[1])
    return str(result.label), float(result.prob)
