"""The yardstick of a fine-tuning run: a bag of words. Logistic regression on which words a
sentence holds, nothing about their order and nothing learned from unlabelled text:

    x_w = 1 if word w occurs in the sentence, else 0        (w over the vocabulary, V words)
    logits = x @ W + b                                      W: (V, C), b: (C,)

A network fine-tuned on the same labelled sentences has to beat this to show that it learned
more than which words go with which label (labkit.train.bow fits it: L-BFGS, its L2 strength
chosen on the validation split). It reads ids like the classifiers do: `model(ids, mask)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from labkit.config import JSONConfig


@dataclass
class BagOfWordsConfig(JSONConfig):
    vocab_size: int = 2
    n_classes: int = 2
    family: str = "bow"

    def __post_init__(self) -> None:
        if self.vocab_size < 1 or self.n_classes < 2:
            raise ValueError("a bag of words needs vocab_size >= 1 and n_classes >= 2")

    def approximate_parameters(self) -> int:
        return (self.vocab_size + 1) * self.n_classes


class BagOfWords(nn.Module):
    carries_state = False
    context_length = None

    def __init__(self, config: BagOfWordsConfig):
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.zeros(config.vocab_size, config.n_classes))  # (V, C)
        self.bias = nn.Parameter(torch.zeros(config.n_classes))  # (C,)

    @staticmethod
    def presence(ids: torch.Tensor, mask: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """(B, T) ids and mask -> (B, V) 0/1: which words each sentence holds (padding never counts)."""
        x = torch.zeros(ids.size(0), vocab_size, device=ids.device)
        return x.scatter_reduce_(1, ids, mask.to(x.dtype), reduce="amax")

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask: (B, T) -> class logits (B, C)."""
        return self.presence(ids, mask, self.config.vocab_size) @ self.weight + self.bias
