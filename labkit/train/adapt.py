"""Language-model fine-tuning on the task's own text, before the classifier (ULMFiT's second stage).

A language model pretrained on Wikipedia has never read film reviews. A few hundred steps of the
same next-token objective on the task's training sentences (their text only, no labels; never the
test sentences) adapt it to their words and style, and the classifier then starts from a body that
already reads that text well. `adapt_language_model` measures the gain on the task's validation
sentences, before and after.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from labkit.data.lm import LMData
from labkit.data.tasks import TaskData
from labkit.train.objectives import LanguageModeling
from labkit.train.settings import TrainConfig
from labkit.train.trainer import Trainer


def task_text(task: TaskData, tokenizer: Any) -> LMData:
    """The task's sentences as one language-modelling stream each split: every sentence's ids,
    then `<eos>` (as a corpus line). Train from the training sentences, valid (and test) from the
    validation sentences."""
    def stream(rows: list[tuple[list[int], int]]) -> torch.Tensor:
        return torch.tensor([i for ids, _ in rows for i in (*ids, tokenizer.eos_id)], dtype=torch.long)

    train, valid = stream(task.train), stream(task.val)
    return LMData(tokenizer, train, valid, valid, {"train": 1.0, "valid": 1.0, "test": 1.0})


def adapt_language_model(model: nn.Module, tokenizer: Any, task: TaskData, *, steps: int, lr: float,
                         base: TrainConfig, device: str = "auto", seed: int = 0) -> dict[str, float]:
    """Train `model` (a language model, in place) for `steps` steps on the task's text with the
    settings of its pretraining (`base`: batch, window, optimizer), a short warm-up and a linear
    decay from `lr`. Returns the validation loss per token on the task's text before and after."""
    data = task_text(task, tokenizer)
    window = min(base.seq_len, max(2, (data.train.numel() - 1) // max(1, base.batch_size) - 1))
    config = base.replace(lr=lr, max_steps=steps, time_budget_s=None, eval_every=steps + 1, eval_every_s=None,
                          warmup_steps=max(1, steps // 10), schedule="linear", min_lr_ratio=0.0, seq_len=window,
                          eval_stride=None, patience=None, device=device, seed=seed)
    trainer = Trainer(model, LanguageModeling(data), config)
    before = trainer.evaluate("valid")["loss"]
    card = trainer.fit()
    after = card["best_val_loss"]
    return {"lm_steps": steps, "lm_val_loss_before": before, "lm_val_loss_after": after,
            "lm_val_ppl_before": math.exp(min(before, 50)), "lm_val_ppl_after": math.exp(min(after, 50)),
            "lm_tokens": card["tokens_seen"]}
