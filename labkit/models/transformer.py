"""A decoder-only Transformer language model (GPT style, pre-LayerNorm).

Scaled dot-product attention, per head:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V

with M the causal mask (0 where a position may look, -inf at later positions), so position t
predicts token t+1 from tokens <= t only. Multi-head attention runs n_heads of these on
d_model / n_heads-wide slices and concatenates them:

    MultiHead(X) = Concat(head_1, ..., head_h) W_O,   head_i = Attention(X W_Q^i, X W_K^i, X W_V^i)

Two attention paths compute the same thing: the fast one calls
`torch.nn.functional.scaled_dot_product_attention` (fused kernels); the explicit one writes the
softmax out and can return the attention pattern of every layer and head for the viewers.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from labkit.config import JSONConfig
from labkit.models.dropout import Dropout, dropout
from labkit.models.output import LMOutput, check_output, head_flops, head_logits, linear, make_head


@dataclass
class TransformerConfig(JSONConfig):
    vocab_size: int = 33_278
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024
    context_length: int = 128
    dropout: float = 0.1
    tie_weights: bool = True
    output: str = "softmax"  # softmax (exact) | adaptive (Grave et al. 2017; see models/output.py)
    adaptive_cutoffs: tuple[int, ...] = ()  # cluster boundaries; () = about 6% and 30% of the vocabulary
    family: str = "transformer"

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.d_model, self.n_layers, self.n_heads, self.d_ff,
               self.context_length) < 1:
            raise ValueError("vocab_size, d_model, n_layers, n_heads, d_ff and context_length "
                             "must be positive")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads "
                             f"({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.adaptive_cutoffs = tuple(self.adaptive_cutoffs)
        check_output(self.output, self.adaptive_cutoffs, self.vocab_size, self.tie_weights)


class KVCache:
    """Keys and values of every layer seen so far, for incremental decoding.

    Decoding one token then costs one query against the cached keys instead of recomputing
    the whole prefix: O(T) work per new token instead of O(T^2). The keys and values live in
    buffers that grow by doubling, so appending a token writes only that token (copying the
    whole cache on every step cost 13% of a decoding step).
    """

    def __init__(self, n_layers: int):
        self.buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers  # (B, H, cap, hs)
        self.lengths = [0] * n_layers

    @property
    def length(self) -> int:
        return self.lengths[0]

    @property
    def keys(self) -> list[torch.Tensor | None]:
        """Per layer, the cached keys (B, H, S, hs), or None before the first token."""
        return [None if b is None else b[0][:, :, :n] for b, n in zip(self.buffers, self.lengths)]

    @property
    def values(self) -> list[torch.Tensor | None]:
        return [None if b is None else b[1][:, :, :n] for b, n in zip(self.buffers, self.lengths)]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add keys and values (B, H, T, hs); returns all of this layer's so far (B, H, S + T, hs)."""
        start, T = self.lengths[layer], k.size(2)
        buffer = self.buffers[layer]
        if buffer is None or start + T > buffer[0].size(2):
            capacity = max(16, 2 * (start + T))
            grown = tuple(t.new_empty(t.size(0), t.size(1), capacity, t.size(3)) for t in (k, v))
            if buffer is not None:
                for new, old in zip(grown, buffer):
                    new[:, :, :start] = old[:, :, :start]
            buffer = self.buffers[layer] = grown  # type: ignore[assignment]
        buffer[0][:, :, start:start + T] = k
        buffer[1][:, :, start:start + T] = v
        self.lengths[layer] = start + T
        return buffer[0][:, :, :start + T], buffer[1][:, :, :start + T]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout
        self.resid_drop = Dropout(config.dropout)

    def forward(self, x: torch.Tensor, layer: int, cache: KVCache | None,
                explicit: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        hs = C // self.n_heads
        q, k, v = linear(self.qkv, x).split(C, dim=2)  # each (B, T, C)
        q = q.view(B, T, self.n_heads, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_heads, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_heads, hs).transpose(1, 2)  # (B, nh, T, hs)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(layer, k, v)  # (B, nh, S, hs), S = past + T
        S = k.size(2)
        p_drop = self.dropout if self.training else 0.0

        att = None
        if explicit or (self.training and x.device.type == "cpu"):
            # Spelled out when the weights are asked for, and for training on a CPU: there torch's
            # fused kernel has no dropout (it falls back to these same steps, with a slower mask)
            # and its backward pass is slower than these products (docs/benchmarks.md).
            bias = additive_mask(T, S, x.device, q.dtype if q.dtype == k.dtype else torch.float32)
            # mask + q k^T / sqrt(hs) in one product: -inf where a query must not look
            scores = torch.baddbmm(bias.expand(B * self.n_heads, T, S), q.reshape(-1, T, hs),
                                   k.reshape(-1, S, hs).transpose(1, 2), alpha=1 / math.sqrt(hs))
            att = F.softmax(scores.view(B, self.n_heads, T, S), dim=-1)  # (B, nh, T, S)
            y = dropout(att, p_drop, self.training) @ v  # (B, nh, T, hs)
        elif past == 0 or T == 1:
            # No cache, or one new query that may see every cached key: the fused kernel's own
            # causal flag (aligned top-left) is right in both cases.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p_drop, is_causal=past == 0 and T > 1)
        else:
            # Several new queries after a cached prefix: the mask is aligned bottom-right.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, S, x.device),
                                               dropout_p=p_drop)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_drop(linear(self.proj, y)), att


def causal_mask(T: int, S: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, S) boolean mask, True where query t (the last T of S positions) may look at key s."""
    q_pos = torch.arange(S - T, S, device=device).unsqueeze(1)  # (T, 1)
    k_pos = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
    return k_pos <= q_pos


@functools.lru_cache(maxsize=8)
def additive_mask(T: int, S: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(T, S): 0 where query t may look at key s, -inf elsewhere (made once per shape)."""
    with torch.inference_mode(False):  # a normal tensor, usable in training whoever made it first
        mask = torch.zeros(T, S, device=device, dtype=dtype)
        return mask.masked_fill_(~causal_mask(T, S, device), float("-inf"))


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_ff)
        self.proj = nn.Linear(config.d_ff, config.d_model)
        self.drop = Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(linear(self.proj, F.gelu(linear(self.fc, x))))


class Block(nn.Module):
    """Pre-LayerNorm block: x + Attn(LN(x)), then x + MLP(LN(x)). The residual stream stays
    un-normalised, which keeps deep stacks trainable without warm-up tricks."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, layer: int, cache: KVCache | None,
                explicit: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, att = self.attn(self.ln1(x), layer, cache, explicit)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, att


class TransformerLM(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        c = config
        self.tok_embed = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_embed = nn.Embedding(c.context_length, c.d_model)  # learned positions
        self.drop = Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = make_head(c.d_model, c.vocab_size, c.output, c.adaptive_cutoffs, bias=False)
        if c.tie_weights:
            self.head.weight = self.tok_embed.weight
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layers) so the residual
        # stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layers)

    def encode(self, idx: torch.Tensor, cache: KVCache | None = None, *,
               return_attention: bool = False) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Token ids (B, T) -> final hidden states (B, T, C) and, when asked, attention maps."""
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        if past + T > self.config.context_length:
            raise ValueError(f"sequence of {past + T} tokens exceeds the context length "
                             f"{self.config.context_length}")
        pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self.drop(self.tok_embed(idx) + self.pos_embed(pos))  # (B, T, C)
        attentions: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x, att = block(x, i, cache, explicit=return_attention)
            if att is not None:
                attentions.append(att)
        return self.ln_f(x), (attentions if return_attention else None)

    def forward(self, idx: torch.Tensor, state: KVCache | None = None, *,
                use_cache: bool = False, return_attention: bool = False,
                compute_logits: bool = True) -> LMOutput:
        """With `use_cache` (or a cache passed as `state`) keys and values are kept in the
        returned state, so the next call only needs the new tokens."""
        cache = state if state is not None else (self.new_cache() if use_cache else None)
        hidden, attentions = self.encode(idx, cache, return_attention=return_attention)
        logits = self.logits(hidden) if compute_logits else None  # (B, T, V)
        return LMOutput(logits=logits, hidden=hidden, state=cache, attentions=attentions)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer: hidden states (..., C) -> logits (..., V)."""
        return head_logits(self.head, hidden)

    def flops_per_token(self, context: int | None = None) -> int:
        """Forward FLOPs per token (2 per multiply-add), attention over `context` positions."""
        c = self.config
        context = context or c.context_length
        per_layer = 2 * (3 * c.d_model * c.d_model + c.d_model * c.d_model + 2 * c.d_model * c.d_ff)
        attention = 2 * 2 * context * c.d_model  # scores and weighted sum
        return c.n_layers * (per_layer + attention) + head_flops(c.d_model, c.vocab_size, c.output,
                                                                 c.adaptive_cutoffs)
