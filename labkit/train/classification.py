"""Fine-tuning's objective for the one Trainer: a label per sentence. Padded batches of (ids,
label), the cross-entropy of the classifier's logits, accuracy; in `gradual` mode one more layer
group of the body unfreezes each epoch (ULMFiT), in `frozen` mode only the head trains; the body's
layer groups may train at rates that fall from the top down (discriminative rates). See
labkit.train.objectives for what an objective provides."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from labkit.data.batching import ClassificationBatch, ClassificationBatches
from labkit.data.tasks import TaskData
from labkit.device import autocast
from labkit.errors import LabkitError
from labkit.train.contract import TrainerView


class Classification:
    """Fine-tuning: the mean cross-entropy of the labels; model selection by validation accuracy
    (higher is better), the test set read once with the best weights."""

    kind = "classifier"
    select = ("val_accuracy", "max")
    shared_keys = ("loss", "accuracy")
    test_weights = "best"
    MODES = ("full", "frozen", "gradual")

    def __init__(self, task: TaskData, *, mode: str = "full", pad_id: int = 0, max_len: int | None = None,
                 body_lr_ratio: float = 1.0, body_lr_decay: float = 1.0, info: dict[str, Any] | None = None):
        if mode not in self.MODES:
            raise LabkitError(f"mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.task, self.mode, self.pad_id, self.max_len = task, mode, pad_id, max_len
        self.body_lr_ratio = body_lr_ratio  # the body's top layer group's rate over the head's
        self.body_lr_decay = body_lr_decay  # each lower layer group at the rate of the one above / this
        self.info = dict(info or {})  # what the card says of the run (task, mode, base run, ...)
        self._iter = None

    def attach(self, trainer: TrainerView) -> None:
        c = trainer.config
        self.world, self.rank = trainer.dist.world_size, trainer.dist.rank
        self.batches = ClassificationBatches(self.task.train, c.batch_size, shuffle=True, seed=c.seed,
                                             pad_id=self.pad_id, max_len=self.max_len)
        self.groups = trainer.model.layer_groups()
        grouped = {id(p) for g in self.groups for p in g}
        for p in trainer.model.body.parameters():  # the language model's own output layer: unused here
            if id(p) not in grouped:
                p.requires_grad_(False)
        self._set_trainable(trainer.model, 0)
        if getattr(trainer.model.config, "standardize", False):  # a frozen body: its features never change
            batches = ClassificationBatches(self.task.train, 256, shuffle=False, pad_id=self.pad_id, max_len=self.max_len)
            with autocast(trainer.device, trainer.precision):
                trainer.model.standardize_on((b.to(trainer.device).ids, b.to(trainer.device).mask) for b in batches)

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to (an epoch whose batches were all read is over)."""
        b = self.batches
        return b.epoch + (b.position >= len(b))

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """The head at the scheduled rate; the body's layer groups (top first) at that rate times
        lr_body / lr_head, each lower one divided by `body_lr_decay` (discriminative rates)."""
        groups = [{"params": list(model.head.parameters()), "weight_decay": weight_decay, "lr_scale": 1.0}]
        for k, params in enumerate(self.groups):
            groups.append({"params": params, "weight_decay": weight_decay,
                           "lr_scale": self.body_lr_ratio * self.body_lr_decay ** -k})
        return groups

    def trainable_groups(self, epoch: int) -> int:
        """frozen: none of the body; full: all of it; gradual: `epoch` groups from the top."""
        return {"frozen": 0, "full": len(self.groups)}.get(self.mode, epoch)

    def _set_trainable(self, model: nn.Module, epoch: int) -> None:
        n = self.trainable_groups(epoch)
        for k, group in enumerate(self.groups):
            for p in group:
                p.requires_grad_(k < n)
        self._body_trains = n > 0

    def before_step(self, trainer: TrainerView) -> None:
        self._set_trainable(trainer.model, self.epoch)
        # A frozen body is a fixed feature extractor: no dropout noise in it.
        trainer.model.body.train(self._body_trains)

    def _next_batch(self) -> ClassificationBatch:
        while True:
            if self._iter is None:
                self._iter = iter(self.batches)
            try:
                return next(self._iter)
            except StopIteration:  # the epoch ended: the batches moved on to the next one
                self._iter = None

    def _my_rows(self, batch: ClassificationBatch) -> tuple[ClassificationBatch, float]:
        """This process's rows (r, r + N, ...) of the global batch, and the weight that makes the
        processes' averaged gradients those of the whole batch's mean loss. A process left with no
        row reads one padding token at weight 0, so that every process takes part in each step."""
        if self.world == 1:
            return batch, 1.0
        rows = torch.arange(self.rank, batch.labels.numel(), self.world)
        weight = self.world * rows.numel() / batch.labels.numel()
        if rows.numel() == 0:
            rows, weight = torch.tensor([0]), 0.0
        part = ClassificationBatch(batch.ids[rows], batch.lengths[rows], batch.mask[rows], batch.labels[rows])
        return part, weight

    def loss(self, trainer: TrainerView) -> tuple[torch.Tensor, dict[str, int]]:
        batch, weight = self._my_rows(self._next_batch())
        batch = batch.to(trainer.device)
        with autocast(trainer.device, trainer.precision):
            logits = trainer.forward(batch.ids, batch.mask).float()
        loss = F.cross_entropy(logits, batch.labels) * weight
        return loss, {"tokens": int(batch.lengths.sum()) * (weight > 0),
                      "examples": int(batch.labels.numel()) * (weight > 0)}

    def step_record(self, loss: float) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def validates_in_part(self, trainer: TrainerView) -> bool:
        return False  # the held-out sentences are few: every validation reads them all

    @torch.inference_mode()
    def evaluate(self, trainer: TrainerView, split: str, whole: bool = False) -> dict[str, Any]:
        """Accuracy, mean loss and the confusion matrix (rows: true label, columns: predicted)."""
        model = trainer.model
        model.eval()
        examples = {"valid": self.task.val, "test": self.task.test}[split]
        n = len(self.task.labels)
        confusion = torch.zeros(n, n, dtype=torch.long)
        loss = 0.0
        batches = ClassificationBatches(examples, trainer.config.eval_batch_size, shuffle=False,
                                        pad_id=self.pad_id, max_len=self.max_len)
        for batch in batches:
            batch = batch.to(trainer.device)
            with autocast(trainer.device, trainer.precision):
                logits = model(batch.ids, batch.mask).float()
            loss += F.cross_entropy(logits, batch.labels, reduction="sum").item()
            for t, p in zip(batch.labels.tolist(), logits.argmax(-1).tolist()):
                confusion[t, p] += 1
        return classification_report(confusion, loss, self.task.labels)

    def eval_record(self, split: str, result: dict[str, Any]) -> dict[str, Any]:
        p = "val" if split == "valid" else split
        return {"epoch": self.epoch, f"{p}_loss": result["loss"], f"{p}_accuracy": result["accuracy"]}

    def selection_value(self, result: dict[str, Any]) -> float:
        return result["accuracy"]

    def card(self, trainer: TrainerView, best: float, test: dict[str, Any] | None,
             val_full: dict[str, Any] | None = None) -> dict[str, Any]:
        from labkit.models import count_parameters

        card = {**self.info, "epochs_run": self.epoch + 1, "train_size": len(self.task.train),
                "val_accuracy": best if math.isfinite(best) else None, "labels": list(self.task.labels),
                "oov_rate": self.task.oov_rate,
                "trainable_parameters_final": count_parameters(trainer.model, trainable_only=True)}
        if test:  # (on ranks other than 0, only the figures rank 0 shared)
            names = {"accuracy": "accuracy", "loss": "test_loss", "confusion_matrix": "confusion_matrix",
                     "precision": "precision", "recall": "recall"}
            card.update({name: test[key] for key, name in names.items() if key in test})
        return card

    def state_dict(self, trainer: TrainerView) -> dict[str, Any]:
        return {"batches": self.batches.state_dict()}

    def load_state_dict(self, trainer: TrainerView, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state["batches"])
        self._iter = None


def classification_report(confusion: torch.Tensor, loss_sum: float, labels: Any) -> dict[str, Any]:
    total = int(confusion.sum())
    correct = int(confusion.diag().sum())
    predicted = confusion.sum(0).clamp(min=1)
    actual = confusion.sum(1).clamp(min=1)
    return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1),
            "confusion_matrix": confusion.tolist(),
            "precision": dict(zip(labels, (confusion.diag() / predicted).tolist())),
            "recall": dict(zip(labels, (confusion.diag() / actual).tolist()))}
