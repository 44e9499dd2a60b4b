"""A sequence classifier on top of a language model's body.

The pretrained network reads the sentence exactly as it did during pretraining; a small head
maps one pooled vector to class scores:

    RNN:         h_1..h_T = body(x)   pooled = h_T (last real token) or the masked mean
    Transformer: h_1..h_T = body(x)   pooled = the masked mean, or h_T (it has seen every token)

Fine-tuning minimises L_fine = -sum log P(y | x) over labelled sentences; pretraining first
minimised L_pre = -sum_t log P(x_t | x_<t) on raw text. The body's weights carry over; the head
starts from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from labkit.config import JSONConfig

POOLINGS = ("mean", "last")


@dataclass
class ClassifierConfig(JSONConfig):
    body: dict[str, Any] = field(default_factory=dict)  # the language model's config
    n_classes: int = 2
    pooling: str = "mean"
    dropout: float = 0.1
    family: str = "classifier"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.n_classes < 2:
            raise ValueError("n_classes must be at least 2")


class SequenceClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        from labkit.models import build_model  # the package imports this module

        self.config = config
        self.body = build_model(config.body)
        width = self.body.config.d_hidden if self.body.config.family == "rnn" else self.body.config.d_model
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(width, config.n_classes)

    @property
    def max_len(self) -> int | None:
        return getattr(self.body.config, "context_length", None)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask: (B, T), right-padded (mask True on real tokens) -> class logits (B, C)."""
        if self.body.config.family == "rnn":
            hidden, _ = self.body.encode(ids)  # (B, T, H)
        else:
            hidden, _ = self.body.encode(ids[:, : self.max_len])  # (B, T, C)
            mask = mask[:, : self.max_len]
        lengths = mask.sum(1).clamp(min=1)  # (B,); an empty sentence reads its first position
        if self.config.pooling == "last":
            pooled = hidden[torch.arange(ids.size(0), device=ids.device), lengths - 1]  # (B, D)
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * weights).sum(1) / lengths.unsqueeze(-1).to(hidden.dtype)  # (B, D)
        return self.head(self.drop(pooled))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Body parameters from the top layer down to the embeddings, for gradual unfreezing."""
        body = self.body
        if body.config.family == "transformer":
            groups = [list(body.ln_f.parameters())]
            groups[0] += list(body.blocks[-1].parameters())
            groups += [list(b.parameters()) for b in reversed(body.blocks[:-1])]
            groups.append([body.tok_embed.weight, body.pos_embed.weight])
            return groups
        n = body.config.n_layers
        groups = [[p for name, p in body.rnn.named_parameters() if name.endswith(f"_l{k}")]
                  for k in reversed(range(n))]
        groups.append([body.embed.weight])
        return groups
