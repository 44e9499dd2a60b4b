"""A decoder-only Transformer language model (GPT style, pre-LayerNorm).

Scaled dot-product attention, per head:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V

with M the causal mask (0 where a position may look, -inf at later positions), so position t
predicts token t+1 from tokens <= t only. Multi-head attention runs n_heads of these on
d_model / n_heads-wide slices and concatenates them:

    MultiHead(X) = Concat(head_1, ..., head_h) W_O,   head_i = Attention(X W_Q^i, X W_K^i, X W_V^i)

The attention is written out as these equations read; its weights pass through the hook point
`blocks.{i}.attn.hook_pattern` and each head's output through `blocks.{i}.attn.hook_z` (labkit.models.hooks
lists every point). The fused kernels that make it fast live in labkit.models.fast, behind
`build_model(config, fast=True)`, tested against this plain version.

Editing this file? labkit builds the fast model by default, whose attention is
`FastCausalSelfAttention`, not the `forward` below: an edit here changes what you see only in
a plain model, `build_model(config, fast=False)` or `load_run(path, fast=False)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from labkit.config import JSONConfig
from labkit.models.hooks import HookPoint, hook_points
from labkit.models.output import LMOutput, check_output, head_flops, head_logits, make_head

# activation -> F.gelu's `approximate`: the exact GELU, or the tanh form real GPT-2 checkpoints were trained with
GELU_APPROXIMATION = {"gelu": "none", "gelu_tanh": "tanh"}


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
    activation: str = "gelu"  # gelu (exact, erf) | gelu_tanh (its tanh approximation: GPT-2's "gelu_new")
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
        if self.activation not in GELU_APPROXIMATION:
            raise ValueError(f"activation must be one of {', '.join(GELU_APPROXIMATION)}, got {self.activation!r}")
        self.adaptive_cutoffs = tuple(self.adaptive_cutoffs)
        check_output(self.output, self.adaptive_cutoffs, self.vocab_size, self.tie_weights)

    def approximate_parameters(self) -> int:
        """The parameter count from the config alone (the big matrices; biases and norms aside)."""
        n = (self.vocab_size + self.context_length) * self.d_model  # token and position embeddings
        n += 0 if self.tie_weights else self.d_model * self.vocab_size
        return n + self.n_layers * (4 * self.d_model * self.d_model + 2 * self.d_model * self.d_ff)


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
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)  # queries, keys and values of all heads
        self.proj = nn.Linear(config.d_model, config.d_model)  # W_O
        self.attn_drop = nn.Dropout(config.dropout)
        self.resid_drop = nn.Dropout(config.dropout)
        self.hook_pattern = HookPoint()  # (B, nh, T, S)
        self.hook_z = HookPoint()  # (B, nh, T, hs)

    def forward(self, x: torch.Tensor, layer: int, cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.shape
        hs = C // self.n_heads
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        q = q.view(B, T, self.n_heads, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_heads, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_heads, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, nh, S, hs): the cached prefix, then these T
        z = self.hook_z(self.attend(q, k, v))  # (B, nh, T, hs)
        y = z.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_drop(self.proj(y))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(hs) + M) v for queries (B, nh, T, hs), the last T of the S
        positions whose keys and values (B, nh, S, hs) are given."""
        T, S = q.size(2), k.size(2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, T, S)
        scores = scores.masked_fill(~causal_mask(T, S, q.device), float("-inf"))
        att = self.hook_pattern(F.softmax(scores, dim=-1))  # (B, nh, T, S): each row sums to 1
        return self.attn_drop(att) @ v  # (B, nh, T, hs)


def causal_mask(T: int, S: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, S) boolean mask, True where query t (the last T of S positions) may look at key s."""
    q_pos = torch.arange(S - T, S, device=device).unsqueeze(1)  # (T, 1)
    k_pos = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
    return k_pos <= q_pos


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_ff)
        self.proj = nn.Linear(config.d_ff, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.approximate = GELU_APPROXIMATION[config.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


class Block(nn.Module):
    """Pre-LayerNorm block: x + Attn(LN(x)), then x + MLP(LN(x)). The residual stream stays
    un-normalised, which keeps deep stacks trainable without warm-up tricks."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)
        self.hook_resid_pre, self.hook_resid_mid, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()  # (B, T, C)
        self.hook_attn_out, self.hook_mlp_out = HookPoint(), HookPoint()  # (B, T, C): what each adds to the stream

    def forward(self, x: torch.Tensor, layer: int, cache: KVCache | None) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln1(x), layer, cache)))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(x))))


class TransformerLM(nn.Module):
    carries_state = False  # each call reads its whole context (a KV cache only saves recomputing it)
    default_pooling = "mean"  # for a classifier on top: every position has seen only its prefix

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        c = config
        self.tok_embed = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_embed = nn.Embedding(c.context_length, c.d_model)  # learned positions
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = make_head(c.d_model, c.vocab_size, c.output, c.adaptive_cutoffs, bias=False)
        if c.tie_weights:
            self.head.weight = self.tok_embed.weight
        self.hook_embed = HookPoint()  # (B, T, C): token embeddings, before the positions are added
        self.hook_final = HookPoint()  # (B, T, C)
        self.hook_logits = HookPoint()  # (B, T, V)
        hook_points(self)  # tell every point its name
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

    @property
    def width(self) -> int:
        """The width of the hidden states the output layer (or a classifier) reads."""
        return self.config.d_model

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layers)

    def encode(self, idx: torch.Tensor, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache | None]:
        """Token ids (B, T) -> final hidden states (B, T, C), and the cache (now holding them too)."""
        B, T = idx.shape
        past = cache.length if cache is not None else 0
        if past + T > self.config.context_length:
            raise ValueError(f"sequence of {past + T} tokens exceeds the context length "
                             f"{self.config.context_length}")
        pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self.drop(self.hook_embed(self.tok_embed(idx)) + self.pos_embed(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, i, cache)
        return self.hook_final(self.ln_f(x)), cache

    def forward(self, idx: torch.Tensor, state: KVCache | None = None, *,
                use_cache: bool = False, compute_logits: bool = True) -> LMOutput:
        """With `use_cache` (or a cache passed as `state`) keys and values are kept in the
        returned state, so the next call only needs the new tokens."""
        cache = state if state is not None else (self.new_cache() if use_cache else None)
        hidden, cache = self.encode(idx, cache)
        logits = self.hook_logits(self.logits(hidden)) if compute_logits else None  # (B, T, V)
        return LMOutput(logits=logits, hidden=hidden, state=cache)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer: hidden states (..., C) -> logits (..., V)."""
        return head_logits(self.head, hidden)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters from the top down to the embeddings, for gradual unfreezing: the top block
        with the final norm, each block below, then both embeddings (the output layer is left out:
        a classifier does not use it)."""
        groups = [[*self.ln_f.parameters(), *self.blocks[-1].parameters()]]
        groups += [list(b.parameters()) for b in reversed(self.blocks[:-1])]
        groups.append([self.tok_embed.weight, self.pos_embed.weight])
        return groups

    def flops_per_token(self, context: int | None = None) -> int:
        """Forward FLOPs per token (2 per multiply-add), attention over `context` positions."""
        c = self.config
        context = context or c.context_length
        per_layer = 2 * (3 * c.d_model * c.d_model + c.d_model * c.d_model + 2 * c.d_model * c.d_ff)
        attention = 2 * 2 * context * c.d_model  # scores and weighted sum
        return c.n_layers * (per_layer + attention) + head_flops(c.d_model, c.vocab_size, c.output,
                                                                 c.adaptive_cutoffs)
