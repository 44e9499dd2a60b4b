"""Where does a model's loss come from? By position in the context window, and by word frequency.

- `loss_by_position`: cut a text into windows of `block` tokens, read each from a fresh start (no
  earlier text, no carried RNN state), and average the next-token loss at each position. Position t
  has seen t tokens of context, so the curve falls as far as a model can use more context; where it
  goes flat, more context stopped helping. (Khandelwal et al. 2018 found that LSTM language models
  use about 200 tokens of context, and word order only within the last 50 or so.)
- `perplexity_by_frequency`: group the predicted tokens by how often they occur in the training
  text (log-spaced buckets, each spanning the same factor of counts, plus "never seen") and report
  the perplexity within each bucket. Frequent words are easy for every model; rare ones show what
  a model learned from few examples.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from labkit.data.batching import eval_windows
from labkit.errors import LabkitError
from labkit.inspect.running import require_lm, target_log_probs


def window_losses(model: nn.Module, stream: torch.Tensor, block: int, *, batch_size: int = 16,
                  max_windows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(losses, targets), both (N, block): the next-token loss (nats) and the target id at each
    position of the first N (at most `max_windows`) full non-overlapping windows of `stream`."""
    require_lm(model, "the loss by position")
    losses, targets = [], []
    n = 0
    for x, y in eval_windows(stream, block, batch_size):
        if x.size(1) != block or (max_windows is not None and n >= max_windows):  # the short tail
            break
        if max_windows is not None:
            x, y = x[: max_windows - n], y[: max_windows - n]
        losses.append(-target_log_probs(model, x, y).double())  # (B, T)
        targets.append(y)
        n += x.size(0)
    if n == 0:
        raise LabkitError(f"the stream is shorter than one window of {block} tokens: use a longer text or a smaller block")
    return torch.cat(losses).numpy(), torch.cat(targets).numpy()


def loss_by_position(model: nn.Module, stream: torch.Tensor, block: int, *, batch_size: int = 16,
                     max_windows: int | None = None) -> np.ndarray:
    """(block,): mean next-token loss (nats) at each position 0..block-1 of non-overlapping windows,
    each read from a fresh start: no earlier text and no carried RNN state. Position t has seen
    t tokens of context, so the curve shows how much a model gains from context."""
    losses, _ = window_losses(model, stream, block, batch_size=batch_size, max_windows=max_windows)
    return losses.mean(0)


def token_counts(stream: torch.Tensor, vocab_size: int) -> np.ndarray:
    """(vocab_size,): how often each token id occurs in `stream` (say, the training split)."""
    return torch.bincount(stream.flatten(), minlength=vocab_size).numpy()


def frequency_buckets(counts: np.ndarray, n_buckets: int = 5) -> list[tuple[int, int]]:
    """Log-spaced [low, high) ranges of training counts from 1 to the largest count, plus (0, 1)
    first for tokens never seen in training. Each range covers the same factor of frequency."""
    top = int(counts.max()) if len(counts) else 0
    if n_buckets < 1 or top < 1:
        raise LabkitError("frequency buckets need n_buckets >= 1 and a training stream with tokens")
    edges = np.unique(np.round(np.geomspace(1, top + 1, n_buckets + 1)).astype(int))
    return [(0, 1), *((int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:]))]


def perplexity_by_frequency(model: nn.Module, stream: torch.Tensor, counts: np.ndarray, block: int, *,
                            n_buckets: int = 5, batch_size: int = 16,
                            max_windows: int | None = None) -> list[dict[str, float]]:
    """Rows {"low", "high", "types", "tokens", "loss", "ppl"}: the next-token loss (nats) and
    perplexity on the tokens of `stream` (read as in `loss_by_position`) whose training count
    (`counts`, from `token_counts` on the training split) is in [low, high). Buckets with no token
    in `stream` are left out; `types` counts the vocabulary entries in the bucket."""
    losses, targets = window_losses(model, stream, block, batch_size=batch_size, max_windows=max_windows)
    seen = counts[targets.ravel()]  # training count of each predicted token
    rows = []
    for low, high in frequency_buckets(counts, n_buckets):
        inside = (seen >= low) & (seen < high)
        if inside.any():
            loss = float(losses.ravel()[inside].mean())
            rows.append({"low": low, "high": high, "types": int(((counts >= low) & (counts < high)).sum()),
                         "tokens": int(inside.sum()), "loss": loss, "ppl": math.exp(min(loss, 50))})
    return rows
