"""fp16's gradient scaler, or nothing: the one place the trainer's step differs by precision.

fp16 keeps 5 bits of exponent: gradients below about 6e-8 become zero. Mixed precision in fp16
(Micikevicius et al., 2018) multiplies the loss by a scale S before the backward pass, so the
gradients are S times larger while they travel in fp16, and divides them by S before the
optimizer step. When a gradient overflows (inf or NaN), that step is skipped and S halved; after
2,000 steps without one, S doubles. bf16 has fp32's exponent and needs none of it; on a GPU
without bf16 (a T4, a V100) labkit trains in fp16 with this scaler (labkit.device.resolve_precision).
"""

from __future__ import annotations

from typing import Any

import torch


class StepScaler:
    """`backward`, `unscale` (before clipping) and `step` for the trainer: with fp16 through a
    torch.amp.GradScaler, otherwise the plain calls. `skipped` counts the steps not taken."""

    def __init__(self, precision: str, device: torch.device):
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.skipped = 0

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """The gradients divided by the scale again, so that clipping reads their true norm."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """The optimizer step; with fp16 skipped when a gradient is not finite (the scale halves).
        Returns whether the step was taken."""
        if self.scaler is None:
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self._counted(self.scaler.get_scale() >= scale)

    def skip(self) -> bool:
        """With fp16, a step whose loss overflowed is skipped as one whose gradients did (the scale
        halves); returns True. Without a scaler, False: a loss that is not finite stops the run."""
        if self.scaler is None:
            return False
        self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
        self._counted(False)
        return True

    def _counted(self, taken: bool) -> bool:
        self.skipped += not taken
        return taken

    @property
    def scale(self) -> float | None:
        return self.scaler.get_scale() if self.scaler is not None else None

    def record(self) -> dict[str, Any]:
        """For a metrics record and the card: fp16's loss scale and the steps skipped so far."""
        return {"loss_scale": self.scale, "skipped_steps": self.skipped} if self.scaler is not None else {}

    def state_dict(self) -> dict[str, Any] | None:
        return {"scaler": self.scaler.state_dict(), "skipped": self.skipped} if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state["scaler"])
            self.skipped = int(state["skipped"])
