"""The contract between the one Trainer (labkit.train.trainer) and a training task, an
*objective*: what the trainer calls (`Objective`), and what an objective may read of the
trainer (`TrainerView`), nothing more. Pretraining (`objectives.LanguageModeling`) and
fine-tuning (`classification.Classification`) are two objectives; a third one implements
`Objective` and trains through the same loop, checkpoints, resume and card
(tests/unit/test_train.py has one written in the test).

The trainer's loop, in the objective's words:

    attach(view)                      once: check the model, make the batches
    param_groups(model, decay)        the optimizer's groups (when it is made)
    before_step(view)                 each step: which parameters train
    loss(view) -> (loss, {"tokens"})  each micro-batch: its mean loss, what it read
    step_record(loss)                 what a logged step adds (a perplexity, ...)
    evaluate(view, split, whole)      a split's result; eval_record(split, result) names it for the log
    selection_value(result)           the number `select` = (log key, "min" | "max") compares
    card(view, best, test, val_full)  the task's part of the run's card
    state_dict(view) / load_state_dict(view, state)   the data position, for resume
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from labkit.train.distributed import Dist
from labkit.train.settings import TrainConfig


class TrainerView(Protocol):
    """What an objective may read of the trainer."""

    config: TrainConfig
    model: nn.Module  # the model itself (evaluation, its head, its carried state)
    forward: Callable[..., Any]  # the module a training step calls (DDP's wrapper, compiled, or the model)
    device: torch.device
    precision: str  # "bf16", "fp16" or "fp32": what autocast runs in
    dist: Dist  # this process's place among the run's processes
    rows: slice  # this process's rows of the global batch
    elapsed: float  # seconds of training so far
    tokens_seen: int


class Objective(Protocol):
    """What the trainer calls of a training task."""

    kind: str  # the card's kind: "lm", "classifier", ...
    select: tuple[str, str]  # (log key of the selection value, "min" or "max"): which evaluation is best
    shared_keys: tuple[str, ...]  # the result's numbers rank 0 tells the other processes after evaluating
    test_weights: str  # "best" or "last": the weights the test split is read with
    epoch: int

    def attach(self, trainer: TrainerView) -> None: ...

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]: ...

    def before_step(self, trainer: TrainerView) -> None: ...

    def loss(self, trainer: TrainerView) -> tuple[torch.Tensor, dict[str, int]]: ...

    def step_record(self, loss: float) -> dict[str, Any]: ...

    def validates_in_part(self, trainer: TrainerView) -> bool: ...

    def evaluate(self, trainer: TrainerView, split: str, whole: bool = False) -> dict[str, Any]: ...

    def eval_record(self, split: str, result: dict[str, Any]) -> dict[str, Any]: ...

    def selection_value(self, result: dict[str, Any]) -> float: ...

    def card(self, trainer: TrainerView, best: float, test: dict[str, Any] | None,
             val_full: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def state_dict(self, trainer: TrainerView) -> dict[str, Any]: ...

    def load_state_dict(self, trainer: TrainerView, state: dict[str, Any]) -> None: ...
