"""Count-based language models: the yardstick a neural one must beat. A bigram model predicts each
token from the one before it alone, with add-alpha smoothing so that a pair never seen in training
costs a finite amount:

    P(b | a) = (count(a, b) + alpha) / (count(a, .) + alpha * V)

The counts are kept sparse (one entry per pair seen), so a 33,278-word vocabulary needs no V x V
table. Notebook 04 scores it on the validation tokens its neural models are scored on; the unigram
model (each token's frequency) is on every language-model card (`unigram_val_ppl`). Exercise
04.bigram writes the same model with a dense table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

ALPHAS = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0003)  # the smoothing strengths choose_alpha tries


def bigram_log_probs(train: torch.Tensor, stream: torch.Tensor, vocab_size: int, alpha: float = 1.0) -> torch.Tensor:
    """log P(stream[t + 1] | stream[t]) for every t under the add-alpha bigram model counted on the
    1-D token stream `train`: (len(stream) - 1,) float64."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive (0 gives an unseen pair probability 0), got {alpha}")
    train, stream = train.long().flatten(), stream.long().flatten()
    pairs, counts = torch.unique(train[:-1] * vocab_size + train[1:], return_counts=True)  # sorted pair codes
    follows = torch.bincount(train[:-1], minlength=vocab_size)  # count(a, .)
    wanted = stream[:-1] * vocab_size + stream[1:]  # (T - 1,)
    seen = torch.zeros_like(wanted)
    if len(pairs):
        at = torch.searchsorted(pairs, wanted).clamp(max=len(pairs) - 1)
        seen = torch.where(pairs[at] == wanted, counts[at], 0)  # count(a, b), 0 for a pair never seen
    return (seen + alpha).double().log() - (follows[stream[:-1]] + alpha * vocab_size).double().log()


def bigram_perplexity(train: torch.Tensor, test: torch.Tensor, vocab_size: int, alpha: float = 1.0) -> float:
    """The perplexity on `test` (its len - 1 predictions) of the add-alpha bigram model counted on `train`."""
    return math.exp(-bigram_log_probs(train, test, vocab_size, alpha).mean().item())


def choose_alpha(train: torch.Tensor, vocab_size: int, alphas: Sequence[float] = ALPHAS,
                 held_out: float = 0.1) -> float:
    """The alpha of `alphas` whose bigram model, counted on the first (1 - held_out) of `train`,
    has the lowest perplexity on the rest: chosen without looking at the validation text."""
    cut = int(len(train) * (1 - held_out))
    return min(alphas, key=lambda a: bigram_perplexity(train[:cut], train[cut:], vocab_size, a))
