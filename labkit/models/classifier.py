"""A sequence classifier on top of a language model's body.

The pretrained network reads the sentence exactly as it did during pretraining; a small head
maps one pooled vector to class scores. Pooling h_1..h_T = body(x) over the real tokens:

    last:   h_T, the last real token's state (an RNN's default: it has read the whole sentence)
    mean:   the mean of h_1..h_T (a Transformer's default: each h_t has seen only its prefix)
    max:    the element-wise max of h_1..h_T
    concat: [last, max, mean] side by side, ULMFiT's pooling (Howard & Ruder 2018), 3x wider

Padding after the real tokens never changes the result: a causal body's states at real tokens do
not read it, and the pooling reads real tokens only.

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

POOLINGS = ("mean", "last", "max", "concat")


@dataclass
class ClassifierConfig(JSONConfig):
    body: dict[str, Any] = field(default_factory=dict)  # the language model's config
    n_classes: int = 2
    pooling: str = "mean"
    dropout: float = 0.1
    family: str = "classifier"
    # the pooled features standardised (each minus its mean, over its standard deviation, both measured
    # once on the training sentences): what a frozen body's head needs, its features fixed and of any scale
    standardize: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.n_classes < 2:
            raise ValueError("n_classes must be at least 2")


class SequenceClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig, *, fast: bool = True):
        super().__init__()
        from labkit.models import build_model  # the package imports this module

        self.config = config
        self.body = build_model(config.body, fast=fast)
        self.drop = nn.Dropout(config.dropout)
        width = self.body.width * (3 if config.pooling == "concat" else 1)
        self.head = nn.Linear(width, config.n_classes)
        if config.standardize:
            self.register_buffer("feature_mean", torch.zeros(width))  # (D,), set by `standardize_on`
            self.register_buffer("feature_std", torch.ones(width))

    def features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask: (B, T), right-padded (mask True on real tokens) -> the pooled vector (B, D)."""
        limit = self.body.context_length  # None: an RNN reads any length
        if limit is not None:
            ids, mask = ids[:, :limit], mask[:, :limit]
        hidden = self.body(ids, compute_logits=False).hidden  # (B, T, D)
        return pool(hidden, mask.bool(), self.config.pooling)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask: (B, T), right-padded (mask True on real tokens) -> class logits (B, C)."""
        x = self.features(ids, mask)
        if self.config.standardize:
            x = (x - self.feature_mean) / self.feature_std
        return self.head(self.drop(x))

    @torch.no_grad()
    def standardize_on(self, batches: Any) -> None:
        """Measure the pooled features' mean and standard deviation over `batches` (of (ids, mask)),
        in eval mode: the frozen body's features on the training sentences."""
        was = self.training
        self.eval()
        x = torch.cat([self.features(ids, mask).float() for ids, mask in batches])  # (N, D)
        self.train(was)
        self.feature_mean.copy_(x.mean(0))
        self.feature_std.copy_(x.std(0, unbiased=False).clamp(min=1e-6))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Body parameters from the top layer down to the embeddings, for gradual unfreezing."""
        return self.body.layer_groups()


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Hidden states (B, T, D) and mask (B, T) -> (B, D), or (B, 3D) for "concat", from the real
    tokens only. An empty sentence reads its first position ("mean" gives zeros for it)."""
    lengths = mask.sum(1).clamp(min=1)  # (B,)
    last = hidden[torch.arange(hidden.size(0), device=hidden.device), lengths - 1]  # (B, D)
    if how == "last":
        return last
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    mean = (hidden * weights).sum(1) / lengths.unsqueeze(-1).to(hidden.dtype)  # (B, D)
    if how == "mean":
        return mean
    real = mask.clone()
    real[:, 0] |= ~mask.any(1)  # an empty sentence: its first position, as for "last"
    top = hidden.masked_fill(~real.unsqueeze(-1), float("-inf")).amax(1)  # (B, D)
    return top if how == "max" else torch.cat([last, top, mean], dim=-1)  # concat: (B, 3D)
