"""Learning-rate schedules.

`lr_at` is a pure function of the step, so a resumed run needs no scheduler state to get the
same rate. The classic SGD recipe for the LSTM ("divide the rate by 4 when validation stalls")
depends on validation history instead, so it is a tiny object with a state_dict.
"""

from __future__ import annotations

import math
from typing import Any


def lr_at(step: int, base_lr: float, *, warmup: int, total: int, min_ratio: float = 0.1,
          kind: str = "cosine") -> float:
    """Linear warm-up for `warmup` steps, then a decay to `min_ratio * base_lr` at `total`:
    a cosine (`kind="cosine"`), or a straight line (`"linear"`: with a short warm-up this is
    ULMFiT's slanted triangular schedule). `kind="constant"` keeps the warm-up and then stays
    at base_lr.
    """
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    if kind == "constant" or total <= warmup:
        return base_lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    left = 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return base_lr * (min_ratio + (1.0 - min_ratio) * left)


PACE_STEPS = 20  # steps timed before a warm-up share trusts the pace to count the budget's steps


def steps_in_budget(step: int, elapsed: float, budget_s: float | None, max_steps: int, warmup: int) -> int:
    """The step at which a schedule ends: `max_steps`, or, with a time budget, the number of
    steps that fit in it at the pace so far, once `warmup` steps are done (so the decay ends
    when the budget does)."""
    if budget_s and elapsed > 0 and step > warmup:
        return min(max_steps, max(step + 1, round(step * budget_s / elapsed)))
    return max_steps


def warmup_for(config: Any, total: int) -> int:
    """The warm-up of a `TrainConfig` in a run of `total` steps: `warmup_steps`, or with a
    `warmup_share`, at most that share of the steps (on a slow machine a time budget holds fewer
    steps than a fixed warm-up, which would leave the rate below its peak and never decay it)."""
    if config.warmup_share is None:
        return config.warmup_steps
    return min(config.warmup_steps, max(1, round(config.warmup_share * total)))


def scheduled_lr(config: Any, step: int, elapsed: float, plateau: PlateauDivider | None = None) -> float:
    """The learning rate of a `TrainConfig`'s schedule at `step`, after `elapsed` seconds of training
    (a time budget ends the decay with it); the plateau schedule's rate is its divider's."""
    if plateau is not None:
        return plateau.lr
    c = config
    timed = c.warmup_steps if c.warmup_share is None else min(c.warmup_steps, PACE_STEPS)
    total = steps_in_budget(step, elapsed, c.time_budget_s, c.max_steps, timed)
    return lr_at(step, c.lr, warmup=warmup_for(c, total), total=total, min_ratio=c.min_lr_ratio, kind=c.schedule)


class PlateauDivider:
    """Divide the learning rate by `factor` whenever validation loss fails to improve."""

    def __init__(self, base_lr: float, factor: float = 4.0, min_lr: float = 1e-4):
        self.lr = base_lr
        self.factor = factor
        self.min_lr = min_lr
        self.best = math.inf

    def update(self, val_loss: float) -> float:
        if val_loss < self.best:
            self.best = val_loss
        else:
            self.lr = max(self.min_lr, self.lr / self.factor)
        return self.lr

    def state_dict(self) -> dict[str, float]:
        return {"lr": self.lr, "best": self.best}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.lr, self.best = float(state["lr"]), float(state["best"])
