"""Notebook 05's exercises: pooling a padded batch of sentences into one vector each (the mean, and
ULMFiT's concat pooling), checked against labkit's `pool`, and the slanted triangular learning
rate, checked against labkit's schedule (`lr_at`, kind "linear")."""

from __future__ import annotations

import torch

from labkit.exercises.core import exercise, expect
from labkit.models.classifier import pool
from labkit.train.schedule import lr_at

TASK = "## 2. The task, through the base model's tokenizer"
RUNS = "## 3. Pretrained vs. from scratch, full vs. frozen, and the yardstick"


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of each sentence's hidden states over its real tokens only: hidden (B, T, D), mask
    (B, T) True on real tokens, False on padding -> (B, D). A sentence with no tokens gives zeros."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1): 1 on real tokens
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, D)


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three sentences of 4, 2 and 3 tokens padded to 4, whose padding holds loud values (99):
    averaged or maxed in, it shows."""
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 0.0], [-1.0, 2.0]],
                           [[2.0, -2.0], [4.0, 6.0], [99.0, 99.0], [99.0, 99.0]],
                           [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [99.0, 99.0]]])  # (B=3, T=4, D=2)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True, True, True, False]])
    return hidden, mask


@exercise("05.mean_pool", masked_mean, after=TASK, imports="import torch", title="masked mean pooling", intro="""
    A classifier on top of a language model needs one vector per sentence. Sentences have different lengths,
    so a batch is padded to the longest one; the mask says which positions are real. The mean over a sentence
    must read its real tokens only: the padding is not part of it. Write it; the check compares with
    labkit's `pool(hidden, mask, "mean")`.""", hint="""
    Turn the mask into weights of shape (B, T, 1) (mask.unsqueeze(-1).float()), sum hidden * weights over T,
    and divide by the number of real tokens, clamped to at least 1 so an empty sentence gives 0, not 0 / 0.""")
def check_mean_pool(fn):
    hidden, mask = padded_batch()
    gen = torch.Generator().manual_seed(5)
    empty = torch.tensor([[True, True, False], [False, False, False]])
    cases = [(hidden, mask, "3 padded sentences by hand"), (torch.randn(2, 3, 4, generator=gen), empty,
                                                             "a batch with an empty sentence")]
    for h, m, what in cases:
        weights = m.unsqueeze(-1).float()
        with torch.no_grad():
            got = fn(h.clone(), m.clone())
        expect(got, pool(h, m, "mean"), what=what, known={
            "padding was averaged in: sum over the real tokens only": h.mean(1),
            "the sum is over the real tokens but it was divided by the padded length T: divide by each sentence's "
            "own number of tokens": (h * weights).sum(1) / h.size(1),
            "a sentence with no tokens gave 0 / 0 = nan: clamp the count to at least 1": (h * weights).sum(1) / weights.sum(1)})
    return len(cases)


def concat_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ULMFiT's concat pooling over each sentence's real tokens: [the last real token's state, the
    maximum over the real tokens, the mean over them] side by side. hidden (B, T, D), mask (B, T)
    True on real tokens (every sentence has at least one) -> (B, 3D)."""
    lengths = mask.sum(1)  # (B,)
    last = hidden[torch.arange(hidden.size(0)), lengths - 1]  # (B, D): the last REAL position
    top = hidden.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)  # (B, D)
    mean = (hidden * mask.unsqueeze(-1)).sum(1) / lengths.unsqueeze(-1)  # (B, D)
    return torch.cat([last, top, mean], dim=-1)


@exercise("05.concat_pool", concat_pool, after=TASK, imports="import torch", title="concat pooling", intro="""
    ULMFiT (Howard & Ruder, 2018) gives its classifier more than the last state: the **concatenation** of the
    last real token's hidden state, the element-wise maximum over the sentence and the mean over it. With
    padding, each of the three must skip the padded positions. The check compares with labkit's
    `pool(hidden, mask, "concat")`.""", hint="""
    lengths = mask.sum(1); the last real state is hidden[torch.arange(B), lengths - 1] (hidden[:, -1] would be
    padding for a short sentence). For the max, fill the padding with -inf first (masked_fill). Then
    torch.cat([last, max, mean], dim=-1).""")
def check_concat_pool(fn):
    hidden, mask = padded_batch()
    gen = torch.Generator().manual_seed(8)
    cases = [(hidden, mask), (torch.randn(2, 5, 3, generator=gen), torch.tensor([[True] * 3 + [False] * 2, [True] * 5]))]
    for h, m in cases:
        want = pool(h, m, "concat")
        D = h.size(-1)
        last, top, mean = want.split(D, dim=-1)
        with torch.no_grad():
            got = fn(h.clone(), m.clone())
        expect(got, want, what=f"concat_pool on {tuple(h.shape)} states with padding", known={
            "hidden[:, -1] reads padding for a short sentence: take each sentence's last REAL token (lengths - 1)":
                torch.cat([h[:, -1], top, mean], -1),
            "the max ran over the padding too: fill it with -inf first": torch.cat([last, h.amax(1), mean], -1),
            "padding was averaged in: the mean is over the real tokens only": torch.cat([last, top, h.mean(1)], -1),
            "the order is [last, max, mean]": torch.cat([mean, top, last], -1)})
    return len(cases)


def slanted_triangular(step: int, total: int, base_lr: float, warmup: int, min_ratio: float = 0.1) -> float:
    """labkit's slanted triangular learning rate at `step` (counted from 0): a linear warm-up,
    base_lr * (step + 1) / warmup for the first `warmup` steps, then a straight line from base_lr
    at step `warmup` down to min_ratio * base_lr at step `total`, and that floor after it."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))  # 0 -> 1 over the decay
    return base_lr * (min_ratio + (1 - min_ratio) * (1 - progress))


def _slanted_mistake(step: int, total: int, base_lr: float, warmup: int, min_ratio: float, mistake: str) -> float:
    if step < warmup:
        return base_lr * (step if mistake == "warmup_from_0" else step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if mistake == "over_total":
        progress = step / total
    progress = progress if mistake == "no_floor" else min(1.0, progress)
    floor = 0.0 if mistake == "to_zero" else min_ratio
    return base_lr * (floor + (1 - floor) * (1 - progress))


@exercise("05.slanted", slanted_triangular, after=RUNS, title="the slanted triangular schedule", intro="""
    ULMFiT fine-tunes with a **slanted triangular** learning rate: a short, steep warm-up, so the new head does
    not wreck the pretrained body with large early gradients, then a long linear decay. labkit's form
    (`labkit.train.schedule.lr_at` with kind "linear") warms up over `warmup` steps and decays to
    `min_ratio * base_lr`. Write it; the check compares every step with labkit's.""", hint="""
    Two pieces. For step < warmup: base_lr * (step + 1) / warmup (so step 0 already trains). After:
    progress = (step - warmup) / (total - warmup), capped at 1, and the rate is
    base_lr * (min_ratio + (1 - min_ratio) * (1 - progress)).""")
def check_slanted(fn):
    cases = [(20, 1.0, 4, 0.1), (10, 3e-3, 1, 0.0), (12, 0.5, 3, 0.25)]
    mistakes = {"the warm-up starts at 0: step 0 must already train, at base_lr * (step + 1) / warmup": "warmup_from_0",
                "the decay ends at min_ratio * base_lr, not at 0": "to_zero",
                "the decay runs from step `warmup` to `total`, over total - warmup steps, not total": "over_total",
                "after `total` steps the rate stays at its floor, min_ratio * base_lr": "no_floor"}
    for total, lr, warmup, floor in cases:
        steps = range(total + 3)
        want = [lr_at(s, lr, warmup=warmup, total=total, min_ratio=floor, kind="linear") for s in steps]
        got = [fn(s, total, lr, warmup, floor) for s in steps]
        expect(got, want, what=f"the rates at steps 0..{total + 2} (total={total}, base_lr={lr}, warmup={warmup}, "
                               f"min_ratio={floor})", atol=1e-9,
               known={m: [_slanted_mistake(s, total, lr, warmup, floor, kind) for s in steps] for m, kind in mistakes.items()})
    return len(cases)
