"""Notebook 06's exercises: switching a head off through labkit's hook API (checked against its
`zero_head`), and two numbers that describe a head's pattern, its previous-token score and its
entropy (checked by hand and against labkit.inspect's `head_stats`)."""

from __future__ import annotations

import math

import torch

from labkit.exercises.attention import tiny_transformer
from labkit.exercises.core import Mistake, exercise, expect
from labkit.inspect.attention import head_stats
from labkit.models.hooks import has_hooks, hooks, run_with_cache, zero_head

ONE_HEAD = "## 3. One head at a time"
SURGERY = "## 5. Switching heads off, and reading each layer"


def ablate_head(model: torch.nn.Module, ids: torch.Tensor, layer: int, head: int) -> torch.Tensor:
    """The logits (B, T, V) of a labkit Transformer on ids (B, T) with head `head` of block `layer`
    switched off: its output z zeroed at the hook point f"blocks.{layer}.attn.hook_z", whose value
    is (B, n_heads, T, hs). The hook must be gone from the model when the function returns."""
    def switch_off(z: torch.Tensor, point) -> torch.Tensor:
        z = z.clone()
        z[:, head] = 0.0  # (B, nh, T, hs): every position of this head
        return z

    with hooks(model, {f"blocks.{layer}.attn.hook_z": switch_off}):
        return model(ids).logits


@exercise("06.ablate_head", ablate_head, after=SURGERY, imports="import torch\n\nfrom labkit.models.hooks import hooks",
          title="switching a head off through the hook API", intro="""
    labkit's models pass their activations through named **hook points** (`labkit.models.hooks`, as in
    TransformerLens). A function hooked on a point sees its value and may return a replacement, which the rest
    of the forward pass then uses. `blocks.{i}.attn.hook_z` holds each head's output before the output
    projection, (B, n_heads, T, hs): zero one head there and it no longer writes to the residual stream. Write
    it with `hooks(model, {name: fn})`, a context manager that removes the hook on leaving. The check compares
    with labkit's `zero_head`.""", hint="""
    def switch_off(z, point): z = z.clone(); z[:, head] = 0.0; return z. Then
    with hooks(model, {f"blocks.{layer}.attn.hook_z": switch_off}): return model(ids).logits""")
def check_ablate_head(fn):
    model = tiny_transformer(5, n_layers=2)
    ids = torch.randint(20, (2, 7), generator=torch.Generator().manual_seed(5))
    cases = [(0, 1), (1, 0)]
    with torch.no_grad():
        plain = model(ids).logits
        for layer, head in cases:
            with hooks(model, zero_head(layer, head)):
                want = model(ids).logits
            known = {"the logits did not change: a hook must RETURN the new tensor (or change z in place)": plain}
            with hooks(model, zero_head(layer, [0, 1])):
                known["every head of the layer was switched off: zero z[:, head] only"] = model(ids).logits
            position = {f"blocks.{layer}.attn.hook_z": lambda z, p, head=head: z.index_fill(2, torch.tensor([head]), 0.0)}
            with hooks(model, position):
                known["you zeroed a position, not a head: z is (B, n_heads, T, hs), the head is dim 1"] = model(ids).logits
            with hooks(model, zero_head(1 - layer, head)):
                known[f"that is head {head} of block {1 - layer}: the block is the `layer` argument"] = model(ids).logits
            got = fn(model, ids.clone(), layer, head)
            if has_hooks(model):
                for m in model.modules():
                    m._forward_hooks.clear()
                raise Mistake("the hook is still on the model after your function returned: every later forward "
                              "pass would run without that head. Use `with hooks(model, {...}):`, which removes it")
            expect(got, want, what=f"the logits with head {head} of block {layer} switched off", known=known)
    return len(cases)


def previous_token_score(pattern: torch.Tensor) -> float:
    """How much a head attends to the token just before: the mean over queries t = 1 .. T-1 of
    pattern[t, t - 1], for one head's attention pattern (T, T), row t = query t's weights over keys."""
    T = pattern.size(0)
    t = torch.arange(1, T)
    return pattern[t, t - 1].mean().item()


def head_patterns() -> list[torch.Tensor]:
    """Patterns (T, T) to score: a perfect previous-token head and an even one (by hand: 1 and
    mean(1/2, 1/3, 1/4) = 0.3611), then every head of a small random model on one sentence."""
    T = 4
    previous = torch.zeros(T, T)
    previous[0, 0] = 1.0
    previous[torch.arange(1, T), torch.arange(T - 1)] = 1.0
    even = torch.ones(T, T).tril() / torch.arange(1, T + 1)[:, None]
    with torch.no_grad():
        _, cache = run_with_cache(tiny_transformer(6, n_layers=2), torch.tensor([[3, 1, 4, 1, 5, 9, 2]]),
                                  names="blocks.*.attn.hook_pattern")
    model_heads = [p[0, h] for p in cache.stack("attn.hook_pattern") for h in range(p.size(1))]
    return [previous, even, *model_heads]


def _labkit_stat(pattern: torch.Tensor, name: str) -> float:
    return head_stats(pattern[None, None].double().numpy())[0][name]


@exercise("06.prev_token", previous_token_score, after=ONE_HEAD, imports="import torch", title="a previous-token score",
          intro="""
    A **previous-token head** puts most of its weight on the token just before the query. Its score is the
    weight on position t - 1, averaged over the queries that have one (t >= 1). Write it for one head's pattern;
    the check compares with labkit's `head_stats` ("previous_token_share").""", hint="""
    With t = torch.arange(1, T), pattern[t, t - 1] picks the weight each query puts on the token before it
    (row = query, column = key); take the mean.""")
def check_prev_token(fn):
    patterns = head_patterns()
    for i, a in enumerate(patterns):
        T = a.size(0)
        rows = torch.arange(T)
        expect(fn(a.clone()), _labkit_stat(a, "previous_token_share"), what=f"pattern {i} ({T} tokens)", known={
            "position 0 has no previous token: average over t = 1 .. T-1 (a[0, -1] wraps to the last column)":
                a[rows, rows - 1].mean().item(),
            "that is the weight of each token on itself (the diagonal): the previous token is column t - 1":
                a[rows[1:], rows[1:]].mean().item(),
            "a[t - 1, t] is above the diagonal, hidden by the mask: rows are queries, so take a[t, t - 1]":
                a[rows[:-1], rows[1:]].mean().item()})
    return len(patterns)


def attention_entropy(pattern: torch.Tensor) -> float:
    """The entropy (nats) of one head's attention, -sum_s a[t, s] log a[t, s] (a term with
    a[t, s] = 0 counts 0), averaged over the queries t = 1 .. T-1 (query 0 has one key only)."""
    a = pattern[1:]  # (T - 1, T)
    logs = torch.where(a > 0, a.log(), torch.zeros_like(a))
    return -(a * logs).sum(-1).mean().item()


@exercise("06.entropy", attention_entropy, after=ONE_HEAD, imports="import torch", title="the entropy of a head",
          intro="""
    A head that looks at one token has entropy 0; one that spreads evenly over the t + 1 tokens it may see has
    entropy log(t + 1). Averaged over the queries, it says how focused a head is. The masked weights are exactly
    0, and by convention 0 log 0 = 0. Write it; the check compares with labkit's `head_stats` ("entropy").""",
          hint="""
    Drop row 0 (pattern[1:]); where a > 0 take a * a.log(), elsewhere 0 (torch.where, or torch.xlogy(a, a));
    sum over the keys, flip the sign, and average over the rows.""")
def check_entropy(fn):
    patterns = head_patterns()
    for i, a in enumerate(patterns):
        want = _labkit_stat(a, "entropy")
        terms = torch.where(a > 0, a * a.log(), torch.zeros_like(a))
        expect(fn(a.clone()), want, what=f"pattern {i} ({a.size(0)} tokens)", known={
            "nan: masked weights are 0, and 0 * log(0) is nan in torch: count those terms as 0": math.nan,
            "position 0 was averaged in: average over the queries t = 1 .. T-1": -terms.sum(-1).mean().item(),
            "labkit measures entropy in nats: use the natural log": want / math.log(2),
            "the minus sign is missing: an entropy is never negative": -want})
    return len(patterns)
