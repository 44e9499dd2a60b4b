"""Trainer events. Subclass `Callback` and override what you need.

A notebook draws live curves from `on_step` / `on_eval`; the CLI shows a progress bar. Every
hook receives the trainer and one plain dict (the same record that goes to metrics.jsonl).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from labkit.train.trainer import Trainer


class Callback:
    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_checkpoint(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_end(self, trainer: Trainer, card: dict[str, Any]) -> None: ...


class ProgressBar(Callback):
    """tqdm.auto: a widget in notebooks, a text bar in terminals."""

    def __init__(self, total: int, initial: int = 0, **tqdm_kwargs: Any):
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, **tqdm_kwargs)

    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.bar.n = record["step"]
        loss = record["loss"]
        self.bar.set_postfix(loss=f"{loss:.3f}", ppl=f"{math.exp(min(loss, 50)):.1f}",
                             tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
        self.bar.refresh()

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.bar.write(f"step {record['step']}: val loss {record['val_loss']:.4f}, "
                       f"val ppl {record['val_ppl']:.2f}")

    def on_end(self, trainer: Trainer, card: dict[str, Any]) -> None:
        self.bar.close()


class History(Callback):
    """Keeps every record in memory (handy in notebooks and tests)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []

    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.steps.append(record)

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.evals.append(record)
