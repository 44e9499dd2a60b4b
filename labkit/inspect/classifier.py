"""Fine-tuning (classifier) runs for viewers: their cards, and predictions.

A classifier run's card holds `accuracy`, a `confusion_matrix` (rows: true label, columns:
predicted), per-class `precision` / `recall` (a dict by label, or a list), `train_size` and
`labels`. Everything here tolerates missing or odd fields: a card from another version shows
what it has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from labkit.data.batching import pad_batch
from labkit.data.tasks import TextEncoder
from labkit.errors import LabkitError, RunError
from labkit.runs import RunDir, RunInfo, load_run, model_label, run_metrics

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


def condition(card: dict[str, Any], config: dict[str, Any] | None = None) -> str:
    """"pretrained, full" / "pretrained, frozen" / "pretrained, gradual", or "scratch" for random
    weights trained in full ("scratch, frozen": a random body under a trained head), so that
    a learning curve draws one line per condition."""
    finetune = (config or {}).get("finetune") or {}
    if card.get("baseline", finetune.get("baseline")) == "bow":
        return "bag of words"
    mode = card.get("mode") or finetune.get("mode") or "full"
    if card.get("task_lm", finetune.get("task_lm")) is True:
        return "task text only" if mode == "full" else f"task text only, {mode}"
    if card.get("from_scratch", finetune.get("from_scratch")) is True:
        return "scratch" if mode == "full" else f"scratch, {mode}"
    return f"pretrained, {mode}"


def summary(info: RunInfo) -> dict[str, Any]:
    """One row per run for the fine-tuning table and the learning curve: with `from_scratch` and
    the `condition` the learning curve draws one line per."""
    card, config = info.card or {}, info.config or {}
    base = card.get("base_run") or config.get("base_run") or ""
    scratch = card.get("from_scratch", (config.get("finetune") or {}).get("from_scratch"))
    return {"run": info.path.name, "status": card.get("status"),
            "base run": Path(str(base)).name if base else "", "model": model_label(config),
            "condition": condition(card, config), "from_scratch": scratch if isinstance(scratch, bool) else None,
            "mode": card.get("mode"), "train_size": _number(card.get("train_size")),
            "accuracy": _number(card.get("accuracy")), "predicted": predicted_text(info),
            "val_accuracy": _number(card.get("val_accuracy")),
            "steps": card.get("steps"), "training time (s)": _number(card.get("wall_time_s"))}


def predicted_text(info: RunInfo) -> str:
    """How many test sentences the run gave each label ("negative 412 · positive 460"), the column
    beside every accuracy: a classifier that gives one answer to all cannot pass for a result."""
    matrix = confusion_matrix(info)
    if not matrix:
        return ""
    labels = labels_of(info)
    counts = [sum(row[j] for row in matrix) for j in range(len(matrix))]
    said = " · ".join(f"{label} {n:,.0f}" for label, n in zip(labels, counts))
    return said + (" (one label only)" if sum(n > 0 for n in counts) == 1 else "")


def accuracy_curve(run_path: str | Path, key: str = "val_accuracy") -> tuple[list[float], list[float]]:
    """(steps, values) of `key` in the run's metrics, if it logs it."""
    xs, ys = [], []
    for r in run_metrics(run_path):
        x, y = _number(r.get("step")), _number(r.get(key))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


@dataclass
class Prediction:
    label: str
    prob: float
    probs: dict[str, float]


class Classifier:
    """A fine-tuned run, loaded for predictions."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        loaded = load_run(path, device=device)
        if loaded.config.get("kind") != "classifier":
            raise RunError(f"{path} is not a fine-tuned classifier run; make one with `labkit finetune`")
        self.model = loaded.model
        labels, finetune = loaded.config.get("labels"), loaded.config.get("finetune")
        max_len = finetune.get("max_len", 64) if isinstance(finetune, dict) else None
        if (not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels)
                or isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
            raise RunError(f"{RunDir(path).config_path} is damaged: its labels or max_len are not what labkit "
                           "wrote; restore it or fine-tune again")
        self.labels = tuple(labels)
        self.tokenizer = loaded.tokenizer
        self.encode = TextEncoder(self.tokenizer)
        self.max_len = max_len

    def ids(self, sentence: str) -> list[int]:
        """The ids the classifier reads for `sentence`: normalised like the task's text, cut to max_len."""
        return self.encode(sentence.lower())[: self.max_len]

    def tokens(self, sentence: str) -> list[str]:
        """The tokens it reads (a word its vocabulary lacks is <unk>)."""
        return [str(t) for t in self.tokenizer.id_to_token(self.ids(sentence))]

    @torch.inference_mode()
    def predict(self, sentence: str) -> Prediction:
        if not sentence.strip():
            raise LabkitError("the sentence is empty; give some text to classify")
        ids = self.ids(sentence)
        batch, _, mask = pad_batch([ids], self.tokenizer.pad_id)
        device = next(self.model.parameters()).device
        probs = F.softmax(self.model(batch.to(device), mask.to(device)).float(), -1)[0].cpu()
        k = int(probs.argmax())
        return Prediction(self.labels[k], float(probs[k]), dict(zip(self.labels, probs.tolist())))
