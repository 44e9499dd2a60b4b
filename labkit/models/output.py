"""What every language model returns, whatever its family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class LMOutput:
    logits: torch.Tensor | None  # (B, T, V), None when the caller asked only for hidden states
    hidden: torch.Tensor  # (B, T, D): top-layer states, the input of the output layer
    state: Any = None  # RNN: hidden state to carry on; Transformer: the KV cache (or None)
    attentions: list[torch.Tensor] | None = None  # Transformer, when asked: per layer (B, H, T, S)
