"""Fit the bag-of-words yardstick (labkit.models.bow) on a task's labelled sentences, in seconds,
and write it as a classifier run, so that every table, page and curve that shows a fine-tuned
network shows it beside them (`labkit finetune RUN --baseline bow`).

The same sentences as the network's (the same seeded draw of `train_size`), the same words (the
base run's tokenizer and SST-to-WikiText normalisation), the same validation split for every
choice: the L2 strength is the one of `L2` whose model reads the validation split best; SST-2 dev
(the test set) is read once, at the end. Full-batch L-BFGS on the sparse 0/1 design matrix:

    minimise  mean_i CE(x_i @ W + b, y_i) + l2 * ||W||^2
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from labkit import __version__
from labkit.data.tasks import TaskData
from labkit.models.bow import BagOfWords, BagOfWordsConfig
from labkit.runs import RunDir
from labkit.train.classification import classification_report

L2 = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # the strengths tried, the best on the validation split kept
MAX_ITER = 200  # L-BFGS iterations per strength


def design(rows: list[tuple[list[int], int]], vocab_size: int) -> torch.Tensor:
    """(N, V) sparse 0/1: which words each sentence holds."""
    pairs = sorted({(i, w) for i, (ids, _) in enumerate(rows) for w in ids})
    index = torch.tensor(pairs, dtype=torch.long).T if pairs else torch.zeros(2, 0, dtype=torch.long)
    return torch.sparse_coo_tensor(index, torch.ones(index.size(1)), (len(rows), vocab_size),
                                   check_invariants=True).coalesce()


def labels_of(rows: list[tuple[list[int], int]]) -> torch.Tensor:
    return torch.tensor([label for _, label in rows], dtype=torch.long)


def fit(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """W (V, C) and b (C,) minimising the mean cross-entropy plus l2 * ||W||^2."""
    w = torch.zeros(x.size(1), n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=MAX_ITER, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(torch.sparse.mm(x, w) + b, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def report(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, labels: tuple[str, ...]) -> dict[str, Any]:
    logits = torch.sparse.mm(x, w) + b
    n = len(labels)
    confusion = torch.zeros(n, n, dtype=torch.long)
    for t, p in zip(y.tolist(), logits.argmax(-1).tolist()):
        confusion[t, p] += 1
    return classification_report(confusion, F.cross_entropy(logits, y, reduction="sum").item(), labels)


def fit_bow(task: TaskData, tokenizer: Any, out: str | Path, *, settings: dict[str, Any],
            base_run: str | None = None) -> dict[str, Any]:
    """Fit the bag of words on `task` (encoded with `tokenizer`) and write it as a classifier run in
    `out` (which must not hold a run; the caller holds its lock); returns its card. `settings` go to
    the config (task, train size, seed, ...)."""
    started = time.perf_counter()
    vocab = tokenizer.vocab_size
    x, y = design(task.train, vocab), labels_of(task.train)
    xv, yv = design(task.val, vocab), labels_of(task.val)
    tried = []
    for l2 in L2:
        w, b = fit(x, y, len(task.labels), l2)
        tried.append((report(w, b, xv, yv, task.labels)["accuracy"], -l2, l2, w, b))
    val_accuracy, _, l2, w, b = max(tried, key=lambda t: t[:2])  # ties: the stronger L2
    test = report(w, b, design(task.test, vocab), labels_of(task.test), task.labels)
    model = BagOfWords(BagOfWordsConfig(vocab_size=vocab, n_classes=len(task.labels)))
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.copy_(b)
    run = RunDir(out)
    run.create(tokenizer, {"kind": "classifier", "labkit_version": __version__, "model": model.config.to_dict(),
                           "finetune": {**settings, "baseline": "bow"}, "base_run": base_run,
                           "labels": list(task.labels)})
    run.save_best(model, {"l2": str(l2)})
    elapsed = time.perf_counter() - started
    card = {"status": "finished", "kind": "classifier", "baseline": "bow", "labkit_version": __version__,
            "task": settings.get("task"), "base_run": base_run, "from_scratch": True, "mode": "full",
            "train_size": len(task.train), "labels": list(task.labels), "oov_rate": task.oov_rate,
            "l2": l2, "l2_tried": {f"{t[2]:g}": t[0] for t in tried}, "val_accuracy": val_accuracy,
            "accuracy": test["accuracy"], "test_loss": test["loss"], "confusion_matrix": test["confusion_matrix"],
            "precision": test["precision"], "recall": test["recall"], "parameters": (vocab + 1) * len(task.labels),
            "steps": 0, "wall_time_s": round(elapsed, 2), "wall_clock_s": round(elapsed, 2),
            "updated_at": time.time()}
    if not math.isfinite(card["test_loss"]):
        card["test_loss"] = None
    run.write_card(card)
    return card
