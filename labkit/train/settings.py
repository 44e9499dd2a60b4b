"""The settings of a training run (`TrainConfig`): the optimizer and its schedule, how long, the
batches, how often to log and evaluate, the precision and the device. Stored in the run's config
(its "train" section), so a run can be resumed with exactly these settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

from labkit.config import JSONConfig

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant", "plateau")


@dataclass
class TrainConfig(JSONConfig):
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    schedule: str = "cosine"  # cosine | linear (decay) | constant | plateau (divide by 4 when validation stalls)
    warmup_steps: int = 0
    warmup_share: float | None = None  # the warm-up lasts at most this share of the run's steps (those that
    # fit in the time budget at the pace so far, or max_steps): a fixed warm-up suits a slower machine too
    min_lr_ratio: float = 0.1
    max_steps: int = 1000
    time_budget_s: float | None = None  # stop after this much training time, whatever the step
    batch_size: int = 20
    seq_len: int = 35  # bptt window (RNN) or block length (Transformer)
    grad_accum: int = 1
    grad_clip: float = 1.0  # 0 turns clipping off
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW's
    patience: int | None = None  # stop after this many evaluations without a better one
    eval_every: int = 200
    eval_every_s: float | None = None  # also evaluate each time this much training time has passed
    eval_batch_size: int = 10
    val_tokens: int | None = None  # language models: each periodic validation scores only the first N tokens of the
    # validation split (cheap enough to evaluate often); the whole split is scored once, at the end (`val_full_*`)
    eval_stride: int | None = None  # a model without carried state is scored in windows of seq_len
    # tokens that move by this many (None: seq_len // 2), so each token sees seq_len - stride before it
    log_every: int = 10
    precision: str = "auto"  # auto (bf16 on CUDA and CPUs with bf16, fp16 on older GPUs, else fp32) | fp32 | bf16 | fp16
    fused_loss: bool = True  # the loss in chunks, never the whole (tokens, vocab) logits (models/loss.py)
    compile: bool = False
    device: str = "auto"
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}")
        for name in ("max_steps", "batch_size", "seq_len", "grad_accum", "eval_every",
                     "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0 < self.lr < math.inf:
            raise ValueError("lr must be a positive number")
        for name in ("weight_decay", "grad_clip"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a number >= 0")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if self.warmup_share is not None and not 0 < self.warmup_share < 1:
            raise ValueError("warmup_share must be in (0, 1)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("min_lr_ratio must be in [0, 1]")
        if self.eval_every_s is not None and not 0 < self.eval_every_s < math.inf:
            raise ValueError("eval_every_s must be a positive number of seconds")
        if self.time_budget_s is not None and not 0 < self.time_budget_s < math.inf:
            raise ValueError("time_budget_s must be a positive number of seconds")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError("betas must be two numbers in [0, 1)")
        if self.eval_stride is not None and not 1 <= self.eval_stride <= self.seq_len:
            raise ValueError(f"eval_stride must be in [1, seq_len = {self.seq_len}]")
        if self.val_tokens is not None and self.val_tokens < 1:
            raise ValueError("val_tokens must be at least 1")
        if self.patience is not None and self.patience < 1:
            raise ValueError("patience must be at least 1")
