"""What every language model returns, whatever its family, and the output layer they share.

The output layer turns a hidden state into a distribution over the vocabulary. With a word
vocabulary of 33,278 entries it holds most of a small model's parameters and most of its compute
(91% of the classic LSTM's FLOPs per token). Two kinds:

- `softmax`: one linear layer, logits for every word, the exact full softmax.
- `adaptive`: Grave et al. (2017), "Efficient softmax approximation for GPUs". The vocabulary,
  sorted by frequency (labkit's vocabularies are), is cut into a head of frequent words plus a
  few tail clusters of rarer ones, each reached through one extra "cluster" entry in the head and
  projected to a smaller width. Most tokens are frequent, so most of the time only the head is
  computed. It is a different model (its own perplexity), not a faster way to compute the same one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

OUTPUTS = ("softmax", "adaptive")
ADAPTIVE_DIV = 4.0  # each tail cluster is 4 times narrower than the previous one


@dataclass
class LMOutput:
    logits: torch.Tensor | None  # (B, T, V), None when the caller asked only for hidden states
    hidden: torch.Tensor  # (B, T, D): top-layer states, the input of the output layer
    state: Any = None  # RNN: hidden state to carry on; Transformer: the KV cache (or None)


def default_cutoffs(vocab_size: int) -> list[int]:
    """Cluster boundaries at about 6% and 30% of the vocabulary (2,000 and 10,000 for WikiText-2's
    33,278 words): the head then covers about 85% of WikiText-2's running tokens."""
    cuts = [c for c in (round(vocab_size * 0.06), round(vocab_size * 0.3)) if 0 < c < vocab_size]
    return sorted(set(cuts))


def check_output(output: str, cutoffs: list[int] | tuple[int, ...], vocab_size: int, tie_weights: bool) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if output == "adaptive":
        if tie_weights:
            raise ValueError("the adaptive softmax has its own output matrices: set tie_weights to false")
        cuts = list(cutoffs) or default_cutoffs(vocab_size)
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in cuts):
            raise ValueError(f"adaptive_cutoffs must be whole numbers, got {cuts}")
        if not cuts or cuts != sorted(set(cuts)) or cuts[0] < 1 or cuts[-1] >= vocab_size:
            raise ValueError(f"adaptive_cutoffs must increase strictly between 1 and vocab_size - 1 "
                             f"({vocab_size - 1}), got {cuts}")


def make_head(width: int, vocab_size: int, output: str, cutoffs: list[int] | tuple[int, ...],
              bias: bool) -> nn.Module:
    if output == "adaptive":
        return nn.AdaptiveLogSoftmaxWithLoss(width, vocab_size, list(cutoffs) or default_cutoffs(vocab_size),
                                             div_value=ADAPTIVE_DIV, head_bias=bias)
    return nn.Linear(width, vocab_size, bias=bias)


def head_logits(head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits (..., V) of hidden states (..., D). For the adaptive softmax these are its full
    log-probabilities, which are valid logits: softmax(log p) = p."""
    if isinstance(head, nn.AdaptiveLogSoftmaxWithLoss):
        flat = hidden.reshape(-1, hidden.size(-1))  # (N, D)
        return head.log_prob(flat).view(*hidden.shape[:-1], -1)
    return head(hidden)


def head_flops(width: int, vocab_size: int, output: str, cutoffs: list[int] | tuple[int, ...],
               targets: torch.Tensor | None = None) -> float:
    """Forward FLOPs per token of the output layer. Without `targets`, of the whole distribution
    (what generation pays). With `targets` (token ids, say the training stream), what the loss of
    those tokens costs on average: the same for a full softmax, but an adaptive softmax computes
    only its head and, for a token of a tail cluster, that cluster."""
    if output != "adaptive":
        return 2 * width * vocab_size
    cuts = [*(list(cutoffs) or default_cutoffs(vocab_size)), vocab_size]
    flops = 2 * width * (cuts[0] + len(cuts) - 1)  # the head: frequent words + one entry per cluster
    # (on the targets' device: a model built under `torch.device("meta")` counts its FLOPs here too)
    counts = torch.bucketize(targets.flatten(), torch.tensor(cuts[:-1], device=targets.device), right=True).bincount(
        minlength=len(cuts)) if targets is not None else None
    for i in range(len(cuts) - 1):
        narrow = int(width // ADAPTIVE_DIV ** (i + 1))
        share = 1.0 if counts is None else float(counts[i + 1]) / max(1, targets.numel())
        flops += share * 2 * (width * narrow + narrow * (cuts[i + 1] - cuts[i]))
    return flops


def train_flops_per_token(model: nn.Module, seq_len: int, targets: torch.Tensor | None = None) -> float:
    """FLOPs of a training step per token: 3 x the forward's matrix products (the backward pass
    costs about twice the forward), the output layer counted as the tokens of `targets` (say the
    training stream) use it: an adaptive softmax computes a tail cluster only for the words in it."""
    c = model.config
    head = (model.width, c.vocab_size, c.output, c.adaptive_cutoffs)
    return 3 * (model.flops_per_token(seq_len) - head_flops(*head) + head_flops(*head, targets=targets))
