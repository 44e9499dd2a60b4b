"""Notebook 03's exercises on attention: scaled dot-product attention with the causal mask, and
splitting the model width into heads and merging them back, checked by hand and against what
labkit's attention computes inside a model (read through its hook points)."""

from __future__ import annotations

import math

import torch

from labkit.exercises.core import Mistake, exercise, expect
from labkit.models import TransformerConfig, build_model, run_with_cache

ATTENTION = "## 1. Attention on four tokens"
HEADS = "## 3. Heads, checked against labkit's model"
IMPORTS = "import math\n\nimport torch"


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention with the causal mask, for queries and keys (..., T, d_k) and
    values (..., T, d_v): weights = softmax(q k^T / sqrt(d_k) + M), with M = -inf where the key comes
    after the query (query t sees keys 0..t). Returns (weights @ v, weights): (..., T, d_v), (..., T, T)."""
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., T, T)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)  # True above the diagonal: the keys after t
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return weights @ v, weights


def attention_mistake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mistake: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with one known mistake: no_mask, no_scale, divide_by_d, softmax_queries,
    past_masked (the mask flipped), zero_masked (masked scores set to 0, not -inf)."""
    T, d = q.size(-2), q.size(-1)
    scale = {"no_scale": 1.0, "divide_by_d": d}.get(mistake, math.sqrt(d))
    scores = q @ k.transpose(-2, -1) / scale
    hidden = torch.ones(T, T, dtype=torch.bool).tril(-1) if mistake == "past_masked" else \
        torch.ones(T, T, dtype=torch.bool).triu(1)
    if mistake == "zero_masked":
        scores = scores.masked_fill(hidden, 0.0)
    elif mistake != "no_mask":
        scores = scores.masked_fill(hidden, float("-inf"))
    weights = scores.softmax(dim=-2 if mistake == "softmax_queries" else -1)
    return weights @ v, weights


def tiny_transformer(seed: int = 0, n_layers: int = 1) -> torch.nn.Module:
    """A small plain (unfused) Transformer LM, dropout off, with random weights larger than an
    initialisation's (std 0.4, not 0.02): its attention is far from even and its predictions far
    from uniform, so that a mistake changes the numbers by more than rounding."""
    torch.manual_seed(seed)
    model = build_model(TransformerConfig(vocab_size=20, d_model=8, n_layers=n_layers, n_heads=2, d_ff=16,
                                          context_length=8, dropout=0.0), fast=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.4)
    return model


def inside_attention(seed: int = 0) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A tiny Transformer's layer-0 attention on one batch: its q, k, v (split by labkit), and what
    its hook points saw (z, the pattern, the projected output), plus the LayerNorm'd input."""
    model = tiny_transformer(seed)
    ids = torch.randint(20, (2, 6), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        _, cache = run_with_cache(model, ids)
        attn = model.blocks[0].attn
        h = model.blocks[0].ln1(cache["blocks.0.hook_resid_pre"])  # (B, T, C)
        q, k, v = (t.view(2, 6, 2, 4).transpose(1, 2) for t in attn.qkv(h).split(8, dim=-1))  # (B, nh, T, hs)
    return model, {"h": h, "q": q, "k": k, "v": v, "z": cache["blocks.0.attn.hook_z"],
                   "pattern": cache["blocks.0.attn.hook_pattern"], "out": cache["blocks.0.hook_attn_out"]}


@exercise("03.attention", causal_attention, after=ATTENTION, imports=IMPORTS,
          title="scaled dot-product attention with the causal mask", intro=r"""
    $\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\big(QK^\top / \sqrt{d_k} + M\big)\,V$, where $M$ is $-\infty$
    above the diagonal: query $t$ may read keys $0..t$ only, never the future it must predict. Write it, for
    any leading dimensions (batch, heads). The check runs the 4-token example above and labkit's attention
    inside a small model.""", hint="""
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k) is (..., T, T), a row per query. Build the mask with
    torch.ones(T, T, dtype=torch.bool).triu(1) (True where the key is in the future), fill those scores with
    float('-inf'), then softmax over the LAST dimension (the keys), and multiply by v.""")
def check_attention(fn):
    Q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]])  # (T, d_k) the notebook's 4 tokens
    K = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]])
    V = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [10.0, 10.0]])  # position 3 holds a loud value
    _, inside = inside_attention()
    cases = [((Q, K, V), causal_attention(Q, K, V), "the 4-token example"),
             ((inside["q"], inside["k"], inside["v"]), (inside["z"], inside["pattern"]),
              "labkit's attention inside a model (2 sentences, 2 heads, 6 tokens)")]
    for args, want, what in cases:
        got = fn(*(a.clone() for a in args))
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Mistake(f"return the pair (output, weights), got {type(got).__name__}")
        T = args[0].size(-2)
        peek = got[1][..., 0, T - 1].flatten()[0] if isinstance(got[1], torch.Tensor) and got[1].dim() >= 2 else 0
        expect(tuple(got), want, what=what, known={
            f"the mask is missing: position 0 attends to position {T - 1} (weight {float(peek):.2f})":
                attention_mistake(*args, "no_mask"),
            "did you divide by sqrt(d_k)? The scores must be q . k / sqrt(d_k)": attention_mistake(*args, "no_scale"),
            "the scores were divided by d_k: divide by its square root": attention_mistake(*args, "divide_by_d"),
            "the softmax ran over the queries (dim -2): each ROW, one query's weights over the keys, must sum to 1":
                attention_mistake(*args, "softmax_queries"),
            "the mask hides the past instead of the future: query t may see keys 0..t": attention_mistake(
                *args, "past_masked"),
            "masked scores must be -inf before the softmax: a score of 0 still gets weight (e^0 = 1)":
                attention_mistake(*args, "zero_masked")})
    return len(cases)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, n_heads, T, C // n_heads): head h gets the contiguous columns
    h * hs .. (h + 1) * hs - 1 of every position, hs = C // n_heads."""
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # (B, nh, T, hs)


def merge_heads(z: torch.Tensor) -> torch.Tensor:
    """(B, n_heads, T, hs) -> (B, T, n_heads * hs): the heads' outputs side by side at every
    position, head 0's hs columns first (the inverse of split_heads)."""
    B, nh, T, hs = z.shape
    return z.transpose(1, 2).reshape(B, T, nh * hs)  # (B, T, C)


@exercise("03.split_heads", split_heads, after=HEADS, imports="import torch", title="splitting the width into heads",
          intro=r"""
    Multi-head attention runs `n_heads` attentions side by side, each on its own slice of the model width:
    head $h$ reads columns $h \cdot hs$ to $(h+1) \cdot hs - 1$ of the queries, keys and values. labkit computes
    Q, K and V for all heads at once, then reshapes (B, T, C) into (B, n_heads, T, hs). Write that reshape; the
    check feeds your heads to labkit's attention and compares with what its hook point `attn.hook_z` saw.""",
          hint="""
    x.view(B, T, n_heads, hs) cuts each position's C columns into n_heads slices; .transpose(1, 2) then moves
    the head dimension before time: (B, n_heads, T, hs).""")
def check_split_heads(fn):
    x = torch.arange(24.0).view(1, 3, 8)  # by hand: head 1 of position 2 holds columns 4..7 = [20, 21, 22, 23]
    model, inside = inside_attention()
    C, nh = 8, 2
    q, k, v = model.blocks[0].attn.qkv(inside["h"]).detach().split(C, dim=-1)
    cases = [(x, 2, "the 3-position example by hand"), (q, nh, "labkit's queries")]
    for inp, n, what in cases:
        Bx, Tx, Cx = inp.shape
        expect(fn(inp.clone(), n), split_heads(inp, n), what=f"split_heads on {what}, n_heads={n}", known={
            "you reshaped to (B, n_heads, T, hs) directly: a head then holds pieces of several positions; "
            "view as (B, T, n_heads, hs), then transpose(1, 2)": inp.reshape(Bx, n, Tx, Cx // n),
            "the head dimension must come before time: (B, n_heads, T, hs); did you forget .transpose(1, 2)?":
                inp.view(Bx, Tx, n, Cx // n),
            "head h owns the contiguous columns h*hs .. (h+1)*hs - 1, not every n_heads-th column":
                inp.view(Bx, Tx, Cx // n, n).permute(0, 3, 1, 2)})
    z = causal_attention(*(fn(t.clone(), nh) for t in (q, k, v)))[0]
    expect(z, inside["z"], what="labkit's attention on your heads, against its hook point blocks.0.attn.hook_z")
    return len(cases) + 1


@exercise("03.merge_heads", merge_heads, after=HEADS, imports="import torch", title="merging the heads back",
          intro="""
    After attention each head has an output (B, n_heads, T, hs); they are put side by side again into
    (B, T, C), and the output projection $W_O$ mixes them. Write the merge; the check projects your merge of
    labkit's heads (its hook point `attn.hook_z`) and compares with what the attention added to the residual
    stream (`hook_attn_out`).""", hint="""
    z.transpose(1, 2) gives (B, T, n_heads, hs); .reshape(B, T, n_heads * hs) joins the heads of each position.
    (After a transpose the tensor is not contiguous: .reshape copies where .view would refuse.)""")
def check_merge_heads(fn):
    model, inside = inside_attention()
    z = torch.arange(24.0).view(1, 2, 3, 4)  # by hand: position 0 is head 0's [0, 1, 2, 3], then head 1's [12 .. 15]
    cases = [(z, "the 2-head example by hand"), (inside["z"], "labkit's heads (hook_z)")]
    for inp, what in cases:
        B, nh, T, hs = inp.shape
        expect(fn(inp.clone()), merge_heads(inp), what=f"merge_heads on {what}", known={
            "you reshaped without moving the heads back: transpose(1, 2) to (B, T, n_heads, hs) first":
                inp.reshape(B, T, nh * hs),
            "the heads are interleaved column by column: put head 0's hs columns first, then head 1's":
                inp.permute(0, 2, 3, 1).reshape(B, T, nh * hs)})
    projected = model.blocks[0].attn.proj(fn(inside["z"].clone())).detach()
    expect(projected, inside["out"], what="W_O applied to your merge, against labkit's hook_attn_out")
    return len(cases) + 1
