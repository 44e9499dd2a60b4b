"""The speed paths, behind one switch: `build_model(config, fast=True)` (the default) calls
`accelerate(model)`, `fast=False` gives the plain model of rnn.py and transformer.py.

`accelerate` swaps module classes for subclasses that compute the same function with the same
parameters, so the state dict (and every saved run) is unchanged; tests/unit/test_fast.py checks the
fast model against the plain one, logits and gradients. What each swap buys (docs/benchmarks.md):

- `FastDropout`: `F.dropout` draws its mask with `bernoulli_`, which on a CPU costs about three
  times as much as drawing uniform numbers and comparing them with p (6.3 against 2.3 ms for the
  786k attention weights of one classic-transformer layer): 7% of a training step. Keeping each
  element where a uniform number is >= p keeps it with probability exactly 1 - p (up to float32
  resolution): the same distribution, another random stream. On CUDA torch's kernel is used.
- `DecodeLinear`: one position at a time, a linear layer is a matrix-vector product that only
  streams its weight through memory; read as an (in, out) row-major matrix the weight streams 3x
  faster than as torch's (out, in) (1.3 against 4.2 ms for the 256 x 33,278 output layer), so a
  transposed copy is kept for decoding on a CPU.
- `FastCausalSelfAttention`: torch's fused `scaled_dot_product_attention` when nobody needs the
  attention pattern; for training on a CPU the products spelled out with `baddbmm` (the mask added
  in the same product, the mask made once per shape), because there the fused kernel has no
  dropout of its own and a slower backward pass. A hook on `attn.hook_pattern` gets the pattern
  computed and passed through the point; `attn.hook_z` is honoured on every path.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from labkit.models.hooks import has_hooks
from labkit.models.rnn import RNNLM
from labkit.models.transformer import CausalSelfAttention, TransformerLM, causal_mask

DECODE_ROWS = 16  # at most this many positions at once: a decoding step, not a batch


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero each element with probability `p` and scale the rest by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training)
    keep = torch.rand(x.shape, device=x.device) >= p  # uniform in fp32, whatever x's dtype
    return x * keep * (1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    """nn.Dropout drawing its mask with `dropout` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def transposed_weight(layer: nn.Linear) -> torch.Tensor:
    """`layer.weight.t()`, contiguous, made again only when the weight has changed."""
    w = layer.weight
    key = (w.data_ptr(), w._version, w.shape)
    cached = getattr(layer, "_labkit_transposed", None)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, w.detach().t().contiguous())
        object.__setattr__(layer, "_labkit_transposed", cached)  # not a parameter, not in the state dict
    return cached[1]


class DecodeLinear(nn.Linear):
    """nn.Linear that multiplies a few rows on a CPU, without gradients, by its transposed copy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != self.weight.dtype
                or x.numel() > DECODE_ROWS * x.size(-1)):
            return super().forward(x)
        out = x.reshape(-1, x.size(-1)) @ transposed_weight(self)  # (N, out)
        if self.bias is not None:
            out += self.bias
        return out.view(*x.shape[:-1], -1)


class FastCausalSelfAttention(CausalSelfAttention):
    """The same attention through fused kernels where they are faster (see the module docstring)."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        T, S = q.size(2), k.size(2)
        if has_hooks(self.hook_pattern) or (self.training and q.device.type == "cpu"):
            B, nh, _, hs = q.shape
            bias = self.additive_mask(T, S, q.device, q.dtype if q.dtype == k.dtype else torch.float32)
            # mask + q k^T / sqrt(hs) in one product: -inf where a query must not look
            scores = torch.baddbmm(bias.expand(B * nh, T, S), q.reshape(-1, T, hs),
                                   k.reshape(-1, S, hs).transpose(1, 2), alpha=1 / math.sqrt(hs))
            att = self.hook_pattern(F.softmax(scores.view(B, nh, T, S), dim=-1))  # (B, nh, T, S)
            return self.attn_drop(att) @ v  # (B, nh, T, hs)
        p = self.attn_drop.p if self.training else 0.0
        if T == S or T == 1:
            # No cached prefix, or one new query that may see every cached key: the fused
            # kernel's own causal flag (aligned top-left) is right in both cases.
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=T == S and T > 1)
        # Several new queries after a cached prefix: the mask is aligned bottom-right.
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, S, q.device), dropout_p=p)

    def additive_mask(self, T: int, S: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(T, S): 0 where query t may look at key s, -inf elsewhere; kept for the last shape asked."""
        key = (T, S, device, dtype)
        cached = getattr(self, "_labkit_mask", None)
        if cached is None or cached[0] != key:
            with torch.inference_mode(False):  # a normal tensor, usable in training whoever made it first
                mask = torch.zeros(T, S, device=device, dtype=dtype)
                mask.masked_fill_(~causal_mask(T, S, device), float("-inf"))
            cached = (key, mask)
            object.__setattr__(self, "_labkit_mask", cached)
        return cached[1]


def accelerate(model: nn.Module) -> nn.Module:
    """Give every language model in `model` (itself, or a classifier's body) the fast paths, in
    place; returns `model`. Only class swaps: the parameters, and the state dict, stay as they are."""
    for lm in [m for m in model.modules() if isinstance(m, (RNNLM, TransformerLM))]:
        adaptive = set(lm.head.modules()) if isinstance(lm.head, nn.AdaptiveLogSoftmaxWithLoss) else set()
        for m in lm.modules():
            if type(m) is nn.Dropout:
                m.__class__ = FastDropout
            elif type(m) is nn.Linear and m not in adaptive:  # the adaptive softmax keeps its own
                m.__class__ = DecodeLinear
            elif type(m) is CausalSelfAttention:
                m.__class__ = FastCausalSelfAttention
    return model
