"""Trainer events. Subclass `Callback` and override what you need.

A notebook draws live curves from `on_step` / `on_eval`; the CLI shows a progress bar. Every
hook receives the trainer and one plain dict (the same record that goes to metrics.jsonl; for
`on_eval_start`, the step and the split about to be evaluated).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from labkit.train.trainer import Trainer


class Callback:
    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_eval_start(self, trainer: Trainer, record: dict[str, Any]) -> None: ...  # {"step", "split", "whole"}

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_checkpoint(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_end(self, trainer: Trainer, card: dict[str, Any]) -> None: ...


class ProgressBar(Callback):
    """tqdm.auto: a widget in notebooks, a text bar in terminals."""

    def __init__(self, total: int, initial: int = 0, **tqdm_kwargs: Any):
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, **tqdm_kwargs)

    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.bar.n = record["step"]
        shown = {"loss": f"{record['loss']:.3f}"}
        if "ppl" in record:
            shown["ppl"] = f"{record['ppl']:.1f}"
        self.bar.set_postfix(**shown, tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
        self.bar.refresh()

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.bar.write(self.describe(record))

    @staticmethod
    def describe(record: dict[str, Any]) -> str:
        """"step 200: val loss 5.1234, val ppl 168.01" (or val accuracy for a classifier)."""
        parts = [f"val loss {record['val_loss']:.4f}"]
        if record.get("val_ppl") is not None:
            parts.append(f"val ppl {record['val_ppl']:.2f}")
        if record.get("val_accuracy") is not None:
            parts.append(f"val accuracy {record['val_accuracy']:.4f}")
        return f"step {record['step']}: " + ", ".join(parts)

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
