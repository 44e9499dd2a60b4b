"""Notebook 03's exercises on the whole block: a pre-LN Transformer block written out from its
parts and checked against labkit's `Block` on the same weights, and one decoding step of
attention with a KV cache, checked against labkit's attention over the whole sequence."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from labkit.exercises.attention import attention_mistake, tiny_transformer
from labkit.exercises.core import Mistake, exercise, expect
from labkit.models.transformer import Block, CausalSelfAttention

MASK = "## 4. No peeking: the causal mask"
SAMPLES = "## 7. Samples and attention"


def transformer_block(x: torch.Tensor, block: Block) -> torch.Tensor:
    """labkit's pre-LayerNorm block, written out from its parts (x is (B, T, C)):
    x = x + W_O(MultiHead(LN1(x))), with causal attention over block.attn.n_heads heads whose
    queries, keys and values come from one linear layer, block.attn.qkv (C -> 3C), and W_O is
    block.attn.proj; then x = x + MLP(LN2(x)), MLP(h) = block.mlp.proj(GELU(block.mlp.fc(h)))."""
    B, T, C = x.shape
    nh = block.attn.n_heads
    q, k, v = block.attn.qkv(block.ln1(x)).split(C, dim=-1)  # each (B, T, C)
    q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // nh)  # (B, nh, T, T)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    z = scores.softmax(dim=-1) @ v  # (B, nh, T, hs)
    x = x + block.attn.proj(z.transpose(1, 2).reshape(B, T, C))
    return x + block.mlp.proj(F.gelu(block.mlp.fc(block.ln2(x))))


def _attention(block: Block, h: torch.Tensor, mistake: str = "") -> torch.Tensor:
    """labkit's attention sublayer on h, with its `attend` swapped for one with `mistake`."""
    attn = block.attn
    if mistake in ("no_mask", "no_scale"):
        attn.attend = lambda q, k, v: attention_mistake(q, k, v, mistake)[0]
    proj = attn.proj
    if mistake == "no_proj":
        attn.proj = nn.Identity()
    try:
        return attn(h, 0, None)
    finally:
        attn.__dict__.pop("attend", None)
        attn.proj = proj


@torch.no_grad()
def block_mistake(x: torch.Tensor, block: Block, mistake: str) -> torch.Tensor:
    """labkit's block, composed from its own sublayers, with one known mistake."""
    mlp = block.mlp
    act = F.relu if mistake == "relu" else lambda h: F.gelu(h, approximate=mlp.approximate)
    ff = lambda h: mlp.proj(act(mlp.fc(h)))  # noqa: E731
    if mistake == "post_ln":
        x = block.ln1(x + _attention(block, x))
        return block.ln2(x + ff(x))
    if mistake == "no_residual":
        return ff(block.ln2(_attention(block, block.ln1(x))))
    x = x + _attention(block, block.ln1(x), mistake)
    return x + ff(block.ln2(x))


class _Forbidden:
    """Forward pre-hooks that stop a call of the block (or of its attention or MLP) as a whole."""

    def __init__(self, block: Block):
        self.handles = [m.register_forward_pre_hook(self.refuse(what)) for m, what in
                        ((block, "block(x)"), (block.attn, "block.attn(...)"), (block.mlp, "block.mlp(...)"))]

    @staticmethod
    def refuse(what: str):
        def hook(module, args):
            raise Mistake(f"write the block from its parts: calling {what} lets labkit do the exercise. Use "
                          "block.ln1, block.attn.qkv, block.attn.proj, block.ln2, block.mlp.fc and block.mlp.proj")
        return hook

    def __enter__(self) -> _Forbidden:
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


BLOCK_IMPORTS = "import math\n\nimport torch\nfrom torch.nn import functional as F\n\nfrom labkit.models.transformer import Block"


@exercise("03.block", transformer_block, after=MASK, imports=BLOCK_IMPORTS,
          title="a whole pre-LN Transformer block", intro=r"""
    A Transformer is a stack of identical blocks around a **residual stream**: each block reads the stream
    through a LayerNorm and *adds* what it computes back to it. labkit's block is pre-LN:
    $x \leftarrow x + W_O\,\mathrm{MultiHead}(\mathrm{LN}_1(x))$, then
    $x \leftarrow x + W_2\,\mathrm{GELU}(W_1\,\mathrm{LN}_2(x))$. Write it from the block's parts (its LayerNorms
    and linear layers: `block.ln1`, `block.attn.qkv`, `block.attn.proj`, `block.ln2`, `block.mlp.fc`,
    `block.mlp.proj`); your attention and heads from the exercises above may help. The check compares with
    labkit's `Block` on the same weights.""", hint="""
    h = block.ln1(x); q, k, v = block.attn.qkv(h).split(C, dim=-1); split each into heads (B, nh, T, hs);
    causal attention; merge the heads; x = x + block.attn.proj(merged). Then
    x = x + block.mlp.proj(F.gelu(block.mlp.fc(block.ln2(x)))). Two residual additions, two LayerNorms
    applied BEFORE their sublayer.""")
def check_block(fn):
    cases = 0
    for seed in (0, 1):
        block = tiny_transformer(seed).blocks[0]
        with torch.no_grad():
            for p in (*block.ln1.parameters(), *block.ln2.parameters()):
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))  # not the identity
        x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(seed + 5))
        with torch.no_grad():
            want = block(x, 0, None)
            mistakes = {
                "post-LN: this block normalises the input of each sublayer (pre-LN): x + attn(ln1(x)), not "
                "ln1(x + attn(x))": "post_ln",
                "the residual connection is missing: each sublayer ADDS to x (x = x + ...)": "no_residual",
                "the mask is missing: a position attends to the tokens after it": "no_mask",
                "did you divide by sqrt(d_k)? (d_k is the head width, C // n_heads)": "no_scale",
                "the MLP's activation is GELU (F.gelu), not ReLU": "relu",
                "the attention's output projection W_O (block.attn.proj) is missing": "no_proj"}
            known = {message: lambda m=m, x=x, block=block: block_mistake(x, block, m) for message, m in mistakes.items()}
            with _Forbidden(block):
                got = fn(x.clone(), block)
        expect(got, want, what=f"your block against labkit's Block (seed {seed})", known=known, atol=1e-4)
        cases += 1
    return cases


def decode_step(attn: CausalSelfAttention, x_new: torch.Tensor, past_k: torch.Tensor,
                past_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decoding step of labkit's attention `attn` with a KV cache. x_new (B, 1, C) is the new
    token's input; past_k and past_v (B, nh, S, hs) are the keys and values of the S tokens before it.
    Returns the attention's output for the new token (B, 1, C), after the projection attn.proj, and
    the keys and values of all S + 1 tokens (B, nh, S + 1, hs), for the next step."""
    B, _, C = x_new.shape
    nh = attn.n_heads
    q, k, v = (t.view(B, 1, nh, C // nh).transpose(1, 2) for t in attn.qkv(x_new).split(C, dim=-1))  # (B, nh, 1, hs)
    k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B, nh, S + 1, hs)
    weights = (q @ k.transpose(-2, -1) / math.sqrt(C // nh)).softmax(dim=-1)  # (B, nh, 1, S + 1): all in the past
    return attn.proj((weights @ v).transpose(1, 2).reshape(B, 1, C)), k, v


def _decode_mistake(attn, x_new, past_k, past_v, mistake: str) -> torch.Tensor:
    """The output of a decoding step with one known mistake."""
    B, _, C = x_new.shape
    q, k, v = (t.view(B, 1, attn.n_heads, -1).transpose(1, 2) for t in attn.qkv(x_new).split(C, dim=-1))
    if mistake == "not_appended":
        k, v = past_k, past_v
    elif mistake != "overwritten":
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    scores = q @ k.transpose(-2, -1) / (1.0 if mistake == "no_scale" else math.sqrt(q.size(-1)))
    if mistake == "square_mask":  # tril of a (1, S + 1) matrix: only key 0 stays
        scores = scores.masked_fill(~torch.ones(1, k.size(2), dtype=torch.bool).tril(), float("-inf"))
    z = scores.softmax(-1) @ v
    return attn.proj(z.transpose(1, 2).reshape(B, 1, C))


@exercise("03.kv_cache", decode_step, after=SAMPLES,
          imports="import math\n\nimport torch\n\nfrom labkit.models.transformer import CausalSelfAttention",
          title="one KV-cache decoding step", intro="""
    Generating token by token, a Transformer would recompute the keys and values of the whole prefix at every
    step. A **KV cache** keeps them: each step computes the new token's query, key and value only, appends the
    key and value to the cache, and lets the one new query attend over every cached key, itself included
    (no mask is needed: every key is in its past). Write one step for labkit's attention layer; the check runs
    two steps and compares with labkit's attention over the whole sequence.""", hint="""
    q, k, v = attn.qkv(x_new).split(C, dim=-1), each split into heads (B, nh, 1, hs);
    k = torch.cat([past_k, k], dim=2) (the same for v); weights = softmax(q @ k^T / sqrt(hs)) over the last
    dim; merge the heads of weights @ v and apply attn.proj. Return it with the grown k and v.""")
def check_kv_cache(fn):
    model = tiny_transformer(2)
    attn = model.blocks[0].attn
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full = attn(x, 0, None)  # (B, T, C): every position attending to its prefix, no cache
        cache = model.new_cache()
        attn(x[:, :3], 0, cache)  # labkit's cache, holding the first 3 positions' keys and values
        past_k, past_v = cache.keys[0].clone(), cache.values[0].clone()
        messages = {"the new token's key and value were not appended: it must attend to itself too "
                    "(torch.cat([past_k, k], dim=2))": "not_appended",
                    "the cache was replaced by the new token's key and value: append them to it": "overwritten",
                    "a mask made for a square T x T matrix hides every key but the first: the one new query may "
                    "see every cached key, and itself": "square_mask",
                    "did you divide by sqrt(hs)?": "no_scale"}
        for t in (3, 4):
            got = fn(attn, x[:, t:t + 1].clone(), past_k, past_v)
            if not isinstance(got, (tuple, list)) or len(got) != 3:
                raise Mistake(f"return (output, keys, values), got {type(got).__name__}")
            known = {m: _decode_mistake(attn, x[:, t:t + 1], past_k, past_v, kind) for m, kind in messages.items()}
            expect(got[0], full[:, t:t + 1], what=f"the output for position {t} after {t} cached tokens, against "
                                                  "labkit's attention over the whole sequence", known=known)
            attn(x[:, t:t + 1], 0, cache)  # labkit's cache grows by the same token
            expect(got[1], cache.keys[0], what=f"the keys after step {t} (positions are dim 2 of (B, nh, S, hs))")
            expect(got[2], cache.values[0], what=f"the values after step {t}")
            past_k, past_v = got[1], got[2]
    return 2
