"""Attention patterns of a Transformer run, and what each head does with them.

`capture_attention` runs a sentence through the model once and keeps every layer's and head's
attention pattern, read at the `blocks.{i}.attn.hook_pattern` hook points (labkit.models.hooks): a
(layers, heads, T, T) array in which row t is how query position t spreads its attention over
positions 0..t (the causal mask zeroes the rest). bertviz, the plotly heatmaps and `head_stats`
all read this one array.

Per head, averaged over the query positions t >= 1 (position 0 can only look at itself):

- entropy (nats) of the row: 0 when the head looks at one token, log(t + 1) when it spreads
  evenly; `entropy_ratio` divides by that maximum.
- mean attention distance: sum over s of a[t, s] * (t - s); 0 for a head that looks at the
  current token, large for one that looks far back.
- previous-token share: a[t, t - 1], the weight on the token just before: a previous-token head
  puts most of its weight there (the first half of an induction circuit).
- first-token share: a[t, 0]. Many heads put most of their weight on the first token: the
  "attention sink". A softmax must hand out a total weight of 1, so a head with nothing useful
  to read parks it on a token every position can see, where it changes little.

`attention_change` compares two captures of the same text (say, before and after fine-tuning;
a fine-tuned classifier's Transformer body is captured like a language model) head by head.
The induction score, a fourth statistic, needs repeated sequences: see `labkit.inspect.heads`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from labkit.errors import LabkitError
from labkit.inspect.inputs import EmptyInput, clean_text, encode_text
from labkit.inspect.running import device_of, eval_mode, language_model
from labkit.models.hooks import run_with_cache

__all__ = ["MAX_TOKENS", "SINK_SHARE", "AttentionCapture", "EmptyInput", "attention_change", "capture_attention",
           "clean_text", "head_stats", "sink_heads", "uniform_entropy"]

MAX_TOKENS = 64  # bertviz draws every token pair; past a few dozen tokens the browser stalls
SINK_SHARE = 0.5  # a head whose first-token share is above this is called a sink head


@dataclass
class AttentionCapture:
    tokens: list[str]  # as the model sees them (word tokenizers show <unk> for unknown words)
    ids: list[int]
    attention: np.ndarray  # (layers, heads, T, T), float32, each row sums to 1
    total_tokens: int  # before any cut
    notices: list[str] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return self.attention.shape[0]

    @property
    def n_heads(self) -> int:
        return self.attention.shape[1]

    def as_torch(self) -> list[torch.Tensor]:
        """bertviz's input: a list over layers of (1, heads, T, T) tensors."""
        return [torch.from_numpy(layer).unsqueeze(0) for layer in self.attention]


def capture_attention(model: nn.Module, tokenizer: Any, text: str,
                      max_tokens: int = MAX_TOKENS) -> AttentionCapture:
    """Attention of every layer and head on `text`, cut to the first `max_tokens` tokens (and to
    the model's context length). Raises `EmptyInput` when the text has no tokens."""
    model = language_model(model)  # a fine-tuned classifier: its Transformer body
    config = getattr(model, "config", None)
    if getattr(config, "family", None) != "transformer":
        raise LabkitError("attention views need a Transformer run; this run is a "
                          f"{getattr(config, 'cell', None) or getattr(config, 'family', 'different model')}")
    ids, total, notices = encode_text(model, tokenizer, text, max_tokens, "bertviz slows to a crawl on long inputs")
    with eval_mode(model), torch.inference_mode():
        _, cache = run_with_cache(model, torch.tensor([ids], device=device_of(model)),
                                  names="blocks.*.attn.hook_pattern", compute_logits=False)
    attention = cache.stack("attn.hook_pattern")[:, 0].float().cpu().numpy()  # (L, H, T, T)
    tokens = [str(t) for t in tokenizer.id_to_token(ids)]
    return AttentionCapture(tokens, ids, attention, total, notices)


def head_stats(attention: np.ndarray, induction: np.ndarray | None = None) -> list[dict[str, float]]:
    """One row per (layer, head): entropy, entropy_ratio, mean_distance, first_token_share,
    previous_token_share, and induction_score when `induction` (layers, heads) is given (labkit.inspect.heads)."""
    L, H, T, _ = attention.shape
    queries = np.arange(1, T) if T > 1 else np.arange(T)  # position 0 has no choice
    a = attention[:, :, queries, :].astype(np.float64)  # (L, H, Q, T)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(a > 0, a * np.log(a), 0.0).sum(-1)  # (L, H, Q)
    max_entropy = np.log(queries + 1.0)  # (Q,): uniform over the visible positions
    distance = (a * (queries[:, None] - np.arange(T)[None, :]).clip(min=0)).sum(-1)  # (L, H, Q)
    first = a[..., 0]  # (L, H, Q)
    previous = attention[:, :, queries, queries - 1] if T > 1 else np.zeros((L, H, 1))  # (L, H, Q)
    ratio = np.divide(entropy, max_entropy, out=np.zeros_like(entropy), where=max_entropy > 0)
    rows = []
    for layer in range(L):
        for head in range(H):
            rows.append({"layer": layer, "head": head,
                         "entropy": float(entropy[layer, head].mean()),
                         "entropy_ratio": float(ratio[layer, head].mean()),
                         "mean_distance": float(distance[layer, head].mean()),
                         "first_token_share": float(first[layer, head].mean()),
                         "previous_token_share": float(previous[layer, head].mean())})
            if induction is not None:
                rows[-1]["induction_score"] = float(induction[layer, head])
    return rows


def sink_heads(stats: list[dict[str, float]], threshold: float = SINK_SHARE) -> list[tuple[int, int]]:
    """(layer, head) of the heads that put more than `threshold` of their attention on token 0."""
    return [(r["layer"], r["head"]) for r in stats if r["first_token_share"] > threshold]


def uniform_entropy(n_tokens: int) -> float:
    """Mean entropy of a head that spreads evenly, over query positions 1..T-1 (for scale)."""
    return float(np.mean([math.log(t + 1) for t in range(1, n_tokens)])) if n_tokens > 1 else 0.0


def attention_change(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per (layer, head): the total variation distance between two attention patterns of the
    same text, 0.5 * sum_s |a[t, s] - b[t, s]|, averaged over query rows: 0 = unchanged,
    1 = the head now looks at entirely different tokens. (Before and after fine-tuning: capture
    the base run and the fine-tuned one, whose body `capture_attention` reads.)"""
    if before.shape != after.shape:
        raise LabkitError(f"attention shapes differ: {before.shape} vs {after.shape}; capture the same "
                          "text with the same tokenizer")
    return 0.5 * np.abs(before - after).sum(-1).mean(-1)  # (L, H)


# --- long inputs ------------------------------------------------------------------------------
LONG_TOKENS = 1024


@dataclass
class LongAttention:
    """One layer's attention (a head's, or the mean over heads) on a long text, pooled into blocks:
    `matrix[i, j]` is the share of attention that the queries of bucket i put on the keys of bucket
    j (each row sums to 1), the buckets being the token ranges [edges[i], edges[i + 1])."""

    tokens: list[str]
    layer: int
    head: int | str  # a head's index, or "mean"
    matrix: np.ndarray  # (n, n): n = cells, or T when the text has no more tokens than cells
    edges: list[int]  # n + 1 token positions
    context: int  # the model's context: each query reads at most this many tokens back
    notices: list[str] = field(default_factory=list)


def _windows(T: int, context: int) -> list[tuple[int, int, int]]:
    """(begin, end, first row kept): windows of `context` tokens, moving by half of it, each
    keeping the rows no earlier window kept, so every query is read with at least half a context
    before it (all of them in the first window). As strided evaluation reads a long text."""
    stride, out, kept = max(1, context // 2), [], 0
    for begin in range(0, T, stride):
        end = min(begin + context, T)
        out.append((begin, end, kept))
        kept = end
        if end == T:
            break
    return out


def long_attention(model: nn.Module, tokenizer: Any, text: str, *, max_tokens: int = LONG_TOKENS,
                   cells: int = 256, layer: int = -1, head: int | None = None) -> LongAttention:
    """Attention of `layer` (default: the last) on up to `max_tokens` tokens of `text`, averaged over
    the heads (or of `head`), pooled into at most `cells` x `cells` blocks so that a heatmap of a
    thousand tokens draws at once. A text longer than the model's context is read in overlapping
    windows (see `_windows`): a query's row is as the model computes it in that window."""
    model = language_model(model)
    if getattr(getattr(model, "config", None), "family", None) != "transformer":
        raise LabkitError("attention views need a Transformer run")
    L, H, context = model.config.n_layers, model.config.n_heads, model.config.context_length
    layer = layer % L if -L <= layer < L else _bad_index("layer", layer, L)
    if head is not None and not 0 <= head < H:
        _bad_index("head", head, H)
    ids = list(tokenizer.encode(clean_text(text)))
    if not ids:
        raise EmptyInput("the text has no tokens: type or paste some text")
    notices = [f"The input has {len(ids):,} tokens; showing the first {max_tokens:,}."] if len(ids) > max_tokens else []
    ids = ids[:max_tokens]
    T = len(ids)
    full = np.zeros((T, T), dtype=np.float32)
    windows = _windows(T, context)
    if len(windows) > 1:
        notices.append(f"Read in windows of {context} tokens (the model's context): each query sees at most "
                       f"{context} tokens back.")
    for length in dict.fromkeys(end - begin for begin, end, _ in windows):  # equal lengths batch together
        group = [w for w in windows if w[1] - w[0] == length]
        batch = torch.tensor([ids[b:e] for b, e, _ in group], device=device_of(model))  # (B, length)
        with eval_mode(model), torch.inference_mode():
            _, cache = run_with_cache(model, batch, names=f"blocks.{layer}.attn.hook_pattern", compute_logits=False)
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"].float().cpu().numpy()  # (B, nh, length, length)
        rows = pattern.mean(1) if head is None else pattern[:, head]  # (B, length, length)
        for (begin, end, kept), a in zip(group, rows):
            first = max(kept, begin) - begin
            full[begin + first:end, begin:end] = a[first:]
    n = min(cells, T)
    edges = np.linspace(0, T, n + 1).round().astype(int)
    sums = np.add.reduceat(np.add.reduceat(full, edges[:-1], axis=0), edges[:-1], axis=1)  # (n, n)
    matrix = sums / np.diff(edges)[:, None]  # mean over a bucket's queries of the mass on each key bucket
    tokens = [str(t) for t in tokenizer.id_to_token(ids)]
    return LongAttention(tokens, layer, "mean" if head is None else head, matrix, edges.tolist(), context, notices)


def _bad_index(what: str, value: int, n: int) -> int:
    raise LabkitError(f"{what} {value} does not exist: the model has {n} ({what}s 0..{n - 1})")
