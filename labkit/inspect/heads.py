"""Induction heads: the attention pattern that lets a Transformer continue a repeated sequence.

Show a model random tokens, then the same tokens again: `r0 r1 ... r(L-1) r0 r1 ... r(L-1)`.
In the second half the next token is predictable only by looking back: find the earlier
occurrence of the current token and read the token *after* it. A head that does this is an
induction head (Olsson et al. 2022). Its induction score is the attention that a query in the
second repeat, at position p, puts on position p - L + 1 (the token right after the earlier
occurrence of the query's token), averaged over those queries and over sequences: 1 for a perfect
induction head, about 1 / p for a head that spreads evenly.

An RNN has no such pattern to read: it must carry the first half in its hidden state (compare
`labkit.inspect.copy_accuracy` on the copy task, and the saliency maps of `labkit.inspect.saliency`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from labkit.errors import LabkitError
from labkit.inspect.inputs import check_fits, context_length
from labkit.inspect.running import device_of, eval_mode, language_model
from labkit.models.hooks import run_with_cache


def repeated_sequences(pool: Sequence[int], length: int, batch: int = 8, seed: int = 0,
                       prefix: Sequence[int] = (), middle: Sequence[int] = ()) -> torch.Tensor:
    """(batch, len(prefix) + 2 * length + len(middle)) ids: `prefix`, `length` distinct tokens
    drawn from `pool`, `middle`, then the same tokens again. Distinct, so each has exactly one
    earlier occurrence."""
    if not 1 <= length <= len(pool):
        raise LabkitError(f"length must be 1..{len(pool)} (the tokens to draw from), got {length}")
    generator = torch.Generator().manual_seed(seed)
    pool_t = torch.as_tensor(list(pool), dtype=torch.long)
    before, between = torch.as_tensor(list(prefix), dtype=torch.long), torch.as_tensor(list(middle), dtype=torch.long)
    rows = []
    for _ in range(batch):
        first = pool_t[torch.randperm(len(pool_t), generator=generator)[:length]]  # (L,)
        rows.append(torch.cat([before, first, between, first]))
    return torch.stack(rows)  # (B, P + 2L + M)


def induction_scores(attention: np.ndarray, length: int, prefix: int = 0, middle: int = 0) -> np.ndarray:
    """(layers, heads) induction scores from attention on repeated sequences: `attention` is
    (layers, heads, T, T) or (batch, layers, heads, T, T) with T = prefix + 2 * length + middle."""
    a = attention if attention.ndim == 5 else attention[None]  # (B, L, H, T, T)
    if a.shape[-1] != prefix + 2 * length + middle:
        raise LabkitError(f"attention covers {a.shape[-1]} tokens, not prefix + 2 * length + middle = "
                          f"{prefix + 2 * length + middle}: pass the sizes the sequences were made with")
    queries = np.arange(prefix + length + middle, prefix + 2 * length + middle)  # the second repeat
    keys = queries - length - middle + 1  # the token after the query token's earlier occurrence
    return a[..., queries, keys].mean(axis=(0, -1))  # (L, H)


def induction_score(model: nn.Module, pool: Sequence[int] | None = None, length: int | None = None, *,
                    batch: int = 8, seed: int = 0, prefix: Sequence[int] = (), middle: Sequence[int] = ()) -> np.ndarray:
    """(layers, heads) induction scores of a Transformer (or a fine-tuned classifier's body) on
    `batch` repeated sequences of tokens drawn from `pool` (default: the whole vocabulary; pass
    the ids of plain words, or of a task's symbols, to keep special tokens out). `length`
    defaults to what fits the context, at most 50. `prefix`: ids before the first repeat (say
    <eos>, how the training text starts a line); `middle`: ids between the repeats (the standard
    score has none; the copy task puts its separator there)."""
    model = language_model(model)
    if getattr(model.config, "family", None) != "transformer":
        raise LabkitError("induction scores read attention: they need a Transformer run")
    pool = list(range(model.config.vocab_size)) if pool is None else list(pool)
    if length is None:
        length = min(50, len(pool), (context_length(model) - len(prefix) - len(middle)) // 2)
    ids = repeated_sequences(pool, length, batch, seed, prefix, middle)
    check_fits(model, ids.size(1))
    with eval_mode(model), torch.no_grad():
        _, cache = run_with_cache(model, ids.to(device_of(model)), names="blocks.*.attn.hook_pattern",
                                  compute_logits=False)
    attention = cache.stack("attn.hook_pattern").transpose(0, 1).float().cpu().numpy()  # (B, L, H, T, T)
    return induction_scores(attention, length, len(prefix), len(middle))
