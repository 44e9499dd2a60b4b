"""Notebook 04's exercises: strided evaluation of a fixed-context model (checked against labkit's
`strided_windows`), the count-based bigram baseline every neural model must beat, and surprisal
in bits."""

from __future__ import annotations

import math

import torch

from labkit.data.batching import strided_windows
from labkit.exercises.attention import tiny_transformer
from labkit.exercises.core import exercise, expect

BUDGETS = "## 1. Two budgets: the same time, then the same FLOPs"
POSITIONS = "## 4. Loss by position in the context window"
SURPRISE = "## 7. Where each one is surprised"


def strided_loss(model: torch.nn.Module, stream: torch.Tensor, context: int, stride: int) -> float:
    """The mean negative log-likelihood (nats) per target of a 1-D stream (the targets are
    stream[1:]) for a model that reads at most `context` tokens: windows of up to `context` inputs
    start every `stride` tokens, and each window scores only the targets no earlier window scored
    (its last `stride`; all of them in the first window), so that every target is scored once,
    with at least context - stride tokens before it once past the first window.
    `model(x).logits` is (1, T, V) for x (1, T)."""
    n = len(stream) - 1  # the number of targets
    total, done = 0.0, 0  # done: targets 0 .. done - 1 are scored
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        x, y = stream[begin:end], stream[begin + 1:end + 1]  # (T,) each: y[t] follows x[t]
        logp = model(x[None]).logits[0].log_softmax(-1)  # (T, V)
        new = end - done  # the last `new` targets of this window are not scored yet
        total -= logp[-new:].gather(1, y[-new:, None]).sum().item()
        done = end
        if end == n:
            break
    return total / n


def _strided_mistake(model, stream: torch.Tensor, context: int, stride: int, mistake: str) -> float:
    """The figure with one known mistake: every_target (each window scores all its targets),
    last_only (the first window too scores only its last `stride`), unshifted (targets = inputs)."""
    nll, count = 0.0, 0
    for x, y, scored in strided_windows(stream, context, stride, batch_size=64):
        y = x if mistake == "unshifted" else y
        keep = {"every_target": x.size(1), "last_only": min(stride, x.size(1))}.get(mistake, scored)
        logp = model(x).logits.log_softmax(-1)[:, -keep:]  # (B, keep, V)
        nll -= logp.gather(2, y[:, -keep:, None]).sum().item()
        count += y[:, -keep:].numel()
    return nll / count


@exercise("04.strided", strided_loss, after=POSITIONS, imports="import torch", title="strided evaluation", intro="""
    A Transformer reads at most `context` tokens. Cutting the text into non-overlapping windows scores the
    first tokens of every window with almost no context, which flatters nobody. **Strided** evaluation slides
    the window by `stride` tokens and scores only each window's new targets, so every token is scored once,
    with at least `context - stride` tokens before it (stride 1 is the exact figure, and the slowest).
    Write it; the check compares with labkit's `strided_windows` on a small model.""", hint="""
    Keep `done`, the number of targets already scored. For begin in range(0, n, stride) with n = len(stream) - 1:
    end = min(begin + context, n); the window's inputs are stream[begin:end], its targets stream[begin + 1:end + 1];
    score its last end - done targets, set done = end, and stop once end == n. Divide the summed negative
    log-probabilities by n.""")
def check_strided(fn):
    model = tiny_transformer(4)
    stream = torch.randint(20, (23,), generator=torch.Generator().manual_seed(4))
    cases = [(8, 3), (8, 8), (8, 1), (6, 4)]
    messages = {"every target of every window was scored: tokens were counted more than once; score only the "
                "targets no earlier window scored": "every_target",
                "the first window's early targets were never scored: the first window scores ALL its targets":
                    "last_only",
                "the targets are not shifted by one: a window's targets are the tokens after its inputs": "unshifted"}
    with torch.no_grad():
        for context, stride in cases:
            want = _strided_mistake(model, stream, context, stride, "")
            known = {m: _strided_mistake(model, stream, context, stride, kind) for m, kind in messages.items()}
            if stride != context:
                known["the stride was ignored: these are non-overlapping windows (stride = context)"] = \
                    _strided_mistake(model, stream, context, context, "")
            expect(fn(model, stream.clone(), context, stride), want,
                   what=f"strided_loss(context={context}, stride={stride}) on 23 tokens", known=known)
    return len(cases)


def bigram_perplexity(train: list[int], test: list[int], vocab_size: int, alpha: float = 1.0) -> float:
    """The perplexity on `test` of a bigram model counted on `train`, with add-alpha smoothing:
    P(b | a) = (count(a, b) + alpha) / (count(a, .) + alpha * vocab_size), where count(a, b) is how
    often b follows a in train and count(a, .) how often a is followed by anything. The test text
    has len(test) - 1 predictions: each token after the first, given the one before."""
    counts = torch.zeros(vocab_size, vocab_size)
    for a, b in zip(train, train[1:]):
        counts[a, b] += 1
    probs = (counts + alpha) / (counts.sum(1, keepdim=True) + alpha * vocab_size)  # each row sums to 1
    nll = -sum(math.log(probs[a, b]) for a, b in zip(test, test[1:]))
    return math.exp(nll / (len(test) - 1))


def _bigram_mistake(train, test, V, alpha, mistake: str) -> float:
    counts = torch.zeros(V, V)
    for a, b in zip(train, train[1:]):
        counts[(b, a) if mistake == "reversed" else (a, b)] += 1
    if mistake == "unigram":
        counts = counts.sum(0, keepdim=True).expand(V, V)
    below = {"alpha_once": alpha, "unsmoothed": 0.0}.get(mistake, alpha * V)
    probs = (counts + (0 if mistake == "unsmoothed" else alpha)) / (counts.sum(1, keepdim=True) + below)
    logs = [math.log(probs[a, b]) if probs[a, b] > 0 else -math.inf for a, b in zip(test, test[1:])]
    return math.exp(-sum(logs) / (len(test) if mistake == "per_token" else len(test) - 1))


@exercise("04.bigram", bigram_perplexity, after=BUDGETS, imports="import math\n\nimport torch",
          title="a count-based bigram baseline", intro=r"""
    Before any neural network: count. A **bigram** model predicts each token from the one before it alone,
    $P(b \mid a) = \mathrm{count}(a, b) / \mathrm{count}(a, \cdot)$. A pair never seen in training would get
    probability 0 and an infinite perplexity, so add-$\alpha$ smoothing adds $\alpha$ to every count. This is the
    yardstick the LSTM and the Transformer must beat. Write its perplexity.""", hint="""
    A (V, V) tensor of counts, row = the previous token: counts[a, b] += 1 for each pair of train.
    probs = (counts + alpha) / (counts.sum(1, keepdim=True) + alpha * V) makes each row sum to 1. The perplexity
    is exp of the mean of -log probs[a, b] over the len(test) - 1 pairs of test.""")
def check_bigram(fn):
    gen = torch.Generator().manual_seed(3)
    cases = [([0, 1, 0, 1, 2], [0, 1, 2], 3, 1.0),  # by hand: P(1|0) = 3/5, P(2|1) = 2/5 -> 0.24 ** -0.5 = 2.041
             ([0, 1, 0, 1, 2], [2, 0, 1], 3, 0.5),  # (2, 0) never seen in train
             (torch.randint(6, (60,), generator=gen).tolist(), torch.randint(6, (20,), generator=gen).tolist(), 6, 0.1)]
    messages = {"no smoothing: a pair never seen in train gets probability 0 (an infinite perplexity); add alpha "
                "to every count": "unsmoothed",
                "divide by count(a, .) + alpha * V, so that each row sums to 1": "alpha_once",
                "the pairs are counted backwards: P(next | previous) has the PREVIOUS token as its row": "reversed",
                "there are len(test) - 1 predictions, not len(test)": "per_token",
                "that is a unigram model: condition on the previous token": "unigram"}
    for train, test, V, alpha in cases:
        expect(fn(list(train), list(test), V, alpha), bigram_perplexity(train, test, V, alpha),
               what=f"bigram_perplexity(train={train[:8]}{'...' if len(train) > 8 else ''}, test={test[:8]}"
                    f"{'...' if len(test) > 8 else ''}, vocab_size={V}, alpha={alpha})",
               known={m: _bigram_mistake(train, test, V, alpha, kind) for m, kind in messages.items()})
    return len(cases)


def surprisal_bits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The surprisal of each target in bits, -log2 P(target t), from the logits (T, V) that predict
    it: a (T,) tensor."""
    logp = logits.log_softmax(dim=-1)  # (T, V), natural log
    return -logp.gather(1, targets[:, None])[:, 0] / math.log(2)


@exercise("04.surprisal", surprisal_bits, after=SURPRISE, imports="import math\n\nimport torch",
          title="surprisal in bits", intro=r"""
    The surprisal of a token is $-\log_2 P(w_t \mid w_{<t})$ bits: 0 for a token the model was sure of, 1 bit
    for a coin flip, $\log_2 V$ for a uniform guess. Its mean is the cross-entropy in bits, and $2^{\text{mean}}$
    the perplexity. Write it from the logits that predict each target.""", hint="""
    logits.log_softmax(-1) gives natural-log probabilities (T, V); pick each row's target with
    .gather(1, targets[:, None]); divide by math.log(2) to get bits, and flip the sign.""")
def check_surprisal(fn):
    half = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]])  # by hand: 1 bit, 2 bits (1/4), 1 bit
    gen = torch.Generator().manual_seed(6)
    cases = [(half, torch.tensor([0, 1, 1])), (torch.randn(5, 7, generator=gen), torch.randint(7, (5,), generator=gen))]
    for logits, targets in cases:
        pick = lambda t, targets=targets: t.gather(1, targets[:, None])[:, 0]  # noqa: E731
        want = surprisal_bits(logits, targets)
        expect(fn(logits.clone(), targets.clone()), want, what=f"surprisal_bits on {tuple(logits.shape)} logits", known={
            "these are nats: divide the natural log by ln 2 (or use log2)": want * math.log(2),
            "the minus sign is missing: surprisal is -log2 P, never negative": -want,
            "logits are not log-probabilities: take log_softmax first": -pick(logits) / math.log(2),
            "the softmax ran over the positions (dim 0): normalise over the vocabulary, the last dim":
                -pick(logits.log_softmax(0)) / math.log(2)})
    return len(cases)
