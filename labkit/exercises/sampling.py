"""Notebook 02's sampling exercise: the distribution a token is drawn from, with temperature,
top-k and top-p (nucleus), checked against labkit.generate's own filter."""

from __future__ import annotations

import math

import torch

from labkit.exercises.core import exercise, expect
from labkit.generate import filter_logits

SAMPLES = "## 5. Samples"


def sampling_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The distribution (V,) the next token is drawn from, given the logits (V,): divide the logits
    by the temperature (> 0); keep the top_k likeliest tokens (0: all); of those, keep the smallest
    set of the likeliest whose probability reaches top_p (1: all): a token stays while the mass of
    the tokens likelier than it is below top_p; renormalise, so that the kept tokens' probabilities
    sum to 1 and the others' are 0."""
    logits = logits / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # the mass of the likelier tokens
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep[order] = before < top_p
        probs = torch.where(keep, probs, torch.zeros_like(probs))
    return probs / probs.sum()


def _on(keep: torch.Tensor, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / temperature) over the tokens in `keep` only."""
    return (logits / temperature).masked_fill(~keep, float("-inf")).softmax(-1)


def _variant(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, mistake: str) -> torch.Tensor | None:
    """The distribution with one known mistake (None where that mistake makes no difference)."""
    right = sampling_probs(logits, temperature, top_k, top_p)
    if mistake == "multiply":
        return sampling_probs(logits, 1 / temperature, top_k, top_p)
    if mistake == "no_renormalise":
        return torch.where(right > 0, (logits / temperature).softmax(-1), 0.0)
    if mistake == "sorted":
        return right.sort(descending=True).values
    if mistake == "temperature_last":
        return _on(sampling_probs(logits, 1.0, top_k, top_p) > 0, logits, temperature)
    if mistake == "smallest_k":
        if not top_k:
            return None
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep[logits.topk(top_k, largest=False).indices] = True
        return sampling_probs(logits.masked_fill(~keep, float("-inf")), temperature, 0, top_p)
    tempered = sampling_probs(logits, temperature, top_k)  # "no_crossing": keep while the mass so far <= top_p
    sorted_probs, order = tempered.sort(descending=True)
    keep = torch.zeros_like(tempered, dtype=torch.bool)
    keep[order] = sorted_probs.cumsum(0) <= top_p + 1e-6
    return _on(keep & (tempered > 0), logits, temperature)


@exercise("02.sampling", sampling_probs, after=SAMPLES, imports="import torch", title="temperature, top-k and top-p",
          intro=r"""
    Generation draws each token from $\mathrm{softmax}(y / \tau)$. The temperature $\tau$ sharpens ($<1$) or
    flattens ($>1$) the distribution; **top-k** keeps only the k likeliest tokens; **top-p** (nucleus) keeps the
    smallest set of likeliest tokens whose probability reaches p, so the tail of unlikely words is never drawn.
    Write the distribution that `labkit.generate` samples from; the check compares with its `filter_logits`.""",
          hint="""
    Divide by the temperature first. Top-k: the k-th largest logit is logits.topk(k).values[-1]; set the
    smaller ones to -inf. Top-p: sort the probabilities (descending), before = cumsum - probs is the mass of
    the likelier tokens; keep where before < top_p (the token that crosses p stays), put the kept flags back
    in token order, zero the rest, and divide by the sum.""")
def check_sampling(fn):
    log = lambda *p: torch.tensor([math.log(x) for x in p])  # noqa: E731 - logits whose softmax is p
    cases = [(log(0.5, 0.3, 0.1, 0.1), 1.0, 0, 1.0), (log(0.5, 0.3, 0.1, 0.1), 0.5, 0, 1.0),
             (log(0.5, 0.3, 0.15, 0.05), 1.0, 2, 1.0), (log(0.4, 0.3, 0.2, 0.1), 1.0, 0, 0.75),
             (log(0.2, 0.4, 0.1, 0.3), 2.0, 0, 0.6), (log(0.1, 0.35, 0.25, 0.3), 0.7, 3, 0.5),
             (log(0.45, 0.35, 0.2), 0.5, 0, 0.5)]  # tempered first, the nucleus is one token; after, two
    for logits, t, k, p in cases:
        want = filter_logits(logits.double() / t, k, p).softmax(-1).float()
        got = fn(logits.clone(), temperature=t, top_k=k, top_p=p)
        mistakes = {
            "did you multiply by the temperature? Divide the logits by it": "multiply",
            "the probabilities were not renormalised: the kept ones must sum to 1": "no_renormalise",
            "top-k kept the k LEAST likely tokens: keep the largest logits": "smallest_k",
            "the nucleus must include the token that crosses top_p: keep a token while the mass of the "
            "tokens likelier than it is below top_p": "no_crossing",
            "these are the probabilities in sorted order: put them back at their tokens' ids": "sorted",
            "apply the temperature first, then top-k and top-p on the tempered distribution": "temperature_last"}
        expect(got, want, what=f"sampling_probs(softmax = {[round(float(x), 2) for x in logits.softmax(-1)]}, "
                               f"temperature={t}, top_k={k}, top_p={p})", atol=1e-4,
               known={message: _variant(logits, t, k, p, m) for message, m in mistakes.items()})
    return len(cases)
