"""Notebook 01's exercises: perplexity from the chain rule, a vocabulary with a frequency cut-off,
bptt batches and their targets, one BPE merge."""

from __future__ import annotations

import math
from collections import Counter

import torch

from labkit.data.batching import BPTTBatches, batchify
from labkit.data.vocab import build_vocab
from labkit.exercises.core import Mistake, exercise, expect

TOKENIZERS = "### Vocabulary size and `<unk>`"
BATCHES = "## 4. From a stream to batches"


def make_vocab(tokens: list[str], min_freq: int, specials: tuple[str, ...] = ("<unk>", "<eos>")) -> list[str]:
    """The vocabulary as a list (index -> token): the specials first, in their order, then every
    other token seen at least `min_freq` times, most frequent first, ties in order of first
    appearance. A special that occurs in `tokens` is not listed twice."""
    counts = Counter(t for t in tokens if t not in specials)  # keeps first-appearance order
    kept = [t for t, c in counts.items() if c >= min_freq]
    return list(specials) + sorted(kept, key=lambda t: -counts[t])  # sorted() is stable: ties keep their order


@exercise("01.vocab", make_vocab, after=TOKENIZERS, imports="from collections import Counter",
          title="a vocabulary with a frequency cut-off", intro="""
    A word vocabulary lists the specials first (`<unk>` for every word it lacks, `<eos>` for the end of a
    line), then the words seen at least `min_freq` times, most frequent first. Rarer words are left out:
    they will be read as `<unk>`. labkit's `build_vocab` does this; write it yourself.""", hint="""
    Count with collections.Counter (it remembers the order words first appeared in), keep the words whose
    count is >= min_freq, sort them by count, largest first (Python's sort is stable, so ties keep their
    order of first appearance), and put the specials in front.""")
def check_make_vocab(fn):
    text = "the cat sat on the mat . the dog sat on the log . <eos> a cat ran".split()
    cases = [(text, 2), (text, 1), (text, 3), ("b a b a c <unk> c".split(), 2)]
    for tokens, min_freq in cases:
        want = build_vocab([tokens], specials=("<unk>", "<eos>"), min_freq=min_freq).itos
        counts = Counter(t for t in tokens if t not in ("<unk>", "<eos>"))
        by_count = sorted(counts, key=lambda t: -counts[t])
        expect(fn(list(tokens), min_freq), want, what=f"make_vocab(..., min_freq={min_freq}) on {' '.join(tokens)!r}",
               known={
                   f"the cut-off is off by one: keep the words seen AT LEAST min_freq={min_freq} times (>=, not >)":
                       want[:2] + [t for t in by_count if counts[t] > min_freq],
                   "the specials must come first (index 0 is <unk>), then the words":
                       [t for t in by_count if counts[t] >= min_freq] + want[:2],
                   "the specials are missing: start the list with <unk>, <eos>": want[2:],
                   "ties must keep their order of first appearance, not the alphabet's":
                       want[:2] + sorted(want[2:], key=lambda t: (-counts[t], t)),
                   "a special seen in the text was counted as a word too: list each special once":
                       want[:2] + [t for t, c in Counter(tokens).most_common() if c >= min_freq]},
               otherwise="most frequent first, after the specials, and only words seen >= min_freq times")
    return len(cases)


def bptt_batches(stream: torch.Tensor, batch_size: int, bptt: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut a 1-D stream of token ids into `batch_size` contiguous rows (the tail that does not fill
    a row is dropped), then read the rows left to right in windows of `bptt` columns: a list of
    (x, y), both (batch_size, T), with y the tokens that follow x (x shifted by one). The last
    window may be shorter; the last column is only ever a target."""
    rows = stream[: len(stream) // batch_size * batch_size].view(batch_size, -1)  # (B, L)
    windows = []
    for start in range(0, rows.size(1) - 1, bptt):
        end = min(start + bptt, rows.size(1) - 1)
        windows.append((rows[:, start:end], rows[:, start + 1:end + 1]))  # (B, T) each
    return windows


def _naive_rows(stream: torch.Tensor, batch_size: int, bptt: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The mistake of reshaping the stream column-first: row b reads tokens b, b + B, b + 2B ..."""
    L = len(stream) // batch_size
    return bptt_batches(stream[: L * batch_size].view(L, batch_size).t().reshape(-1), batch_size, bptt)


@exercise("01.bptt", bptt_batches, after=BATCHES, imports="import torch", title="bptt batches and their targets", intro="""
    An RNN reads the stream as `batch_size` parallel rows, each a contiguous piece of the text, in windows of
    `bptt` tokens; window k+1 continues window k in every row, so the hidden state can be carried across.
    The targets are the inputs shifted by one token. Write what `batchify` + `BPTTBatches` do.""", hint="""
    rows = stream[:N].view(batch_size, -1) with N the largest multiple of batch_size; then for start in
    range(0, L - 1, bptt): x = rows[:, start:end] and y = rows[:, start + 1:end + 1], with
    end = min(start + bptt, L - 1) so that y never runs past the last column.""")
def check_bptt(fn):
    cases = [(torch.arange(26), 2, 5), (torch.arange(30), 3, 4), (torch.arange(100, 121), 4, 2)]
    for stream, B, T in cases:
        want = list(BPTTBatches(batchify(stream, B), T))
        got = fn(stream.clone(), B, T)
        what = f"bptt_batches(torch.arange({int(stream[0])}, {int(stream[-1]) + 1}), batch_size={B}, bptt={T})"
        if not isinstance(got, (list, tuple)) or not all(isinstance(w, (list, tuple)) and len(w) == 2 for w in got):
            raise Mistake(f"{what}: return a list of (x, y) pairs, got {type(got).__name__}")
        rows = batchify(stream, B)
        expect(len(got), len(want), what=f"{what}: the number of windows", known={
            "the windows step by batch_size, not by bptt (the old tutorial's slip)": len(range(0, rows.size(1) - 1, B)),
            "the last (shorter) window is missing": len(want) - 1,
            "too many windows: the last column is only a target, so inputs stop one before it":
                len(range(0, rows.size(1), T))})
        for k, ((x, y), (wx, wy)) in enumerate(zip(got, want)):
            expect(x, wx, what=f"{what}: x of window {k}", known={
                f"the rows are not contiguous pieces of the text: row 0 must read {wx[0, :3].tolist()}..., not "
                f"every {B}th token (view the stream as (batch_size, -1))": _naive_rows(stream, B, T)[k][0]})
            expect(y, wy, what=f"{what}: y of window {k}", known={
                "the targets are not shifted by one: y must be the tokens that FOLLOW x": wx,
                "the targets are shifted the wrong way: y[t] is x[t + 1], the next token":
                    rows[:, k * T - 1: k * T - 1 + wx.size(1)] if k else None})
    return len(cases)


def perplexity(token_probs: list[float]) -> float:
    """The perplexity of a text, from the probability the model gave each of its tokens:
    token_probs[t] = P(w_t | w_<t). By the chain rule P(text) is their product, and the
    perplexity is P(text) ** (-1 / T) = exp(mean over t of -log P(w_t | w_<t))."""
    return math.exp(-sum(math.log(p) for p in token_probs) / len(token_probs))


@exercise("01.perplexity", perplexity, after=BATCHES, imports="import math", title="perplexity from the chain rule", intro=r"""
    A language model learns to give each target above (the next token) a high probability, given the tokens
    before it. How well it does is measured by the perplexity. By the chain
    rule, $P(w_1 \dots w_T) = \prod_t P(w_t \mid w_{<t})$, and the **perplexity** is
    $P(w_1 \dots w_T)^{-1/T} = \exp\big(-\frac{1}{T} \sum_t \log P(w_t \mid w_{<t})\big)$: the number of equally
    likely choices the model is, on average, as unsure as. Write it from the list of probabilities.""",
          hint="""
    Sum the natural logs of the probabilities, divide by the number of tokens, flip the sign, and take exp.
    A model that gives every token probability 1/10 has perplexity 10.""")
def check_perplexity(fn):
    cases = [[0.5, 0.5], [0.25, 0.5, 1.0], [0.1] * 10, [0.1, 0.5, 0.9, 0.2]]
    for probs in cases:  # 2, 2 (0.125 ** (-1/3)), 10 (a uniform guess over 10 words), 3.247
        logs = [math.log(p) for p in probs]
        expect(fn(list(probs)), perplexity(probs), what=f"perplexity({probs})", known={
            "the log-probabilities were summed, not averaged: divide by the number of tokens T":
                math.exp(-sum(logs)),
            "the minus sign is missing: a perplexity is at least 1": math.exp(sum(logs) / len(logs)),
            "you averaged the probabilities: perplexity is the exp of the mean NEGATIVE LOG-probability":
                1 / (sum(probs) / len(probs)),
            "logs in base 2 with exp (or the reverse): use the natural log with exp, or log2 with 2 **":
                math.exp(-sum(math.log2(p) for p in probs) / len(probs)),
            "you returned the mean negative log-likelihood (the loss): take its exp": -sum(logs) / len(logs)})
    return len(cases)


def bpe_merge(words: dict[tuple[str, ...], int]) -> tuple[tuple[str, str], dict[tuple[str, ...], int]]:
    """One merge of byte-pair encoding. `words` maps each word, split into symbols, to how often it
    occurs. Count every pair of adjacent symbols, weighted by the word's count; take the most
    frequent pair (a tie goes to the pair seen first, reading the words in order, left to right);
    rewrite every word with each occurrence of that pair, from the left, as one symbol. Returns the
    pair and the rewritten words (same counts)."""
    pairs: Counter[tuple[str, str]] = Counter()
    for symbols, count in words.items():
        for pair in zip(symbols, symbols[1:]):
            pairs[pair] += count
    best = max(pairs, key=lambda p: pairs[p])  # the first of the most frequent
    merged = {}
    for symbols, count in words.items():
        out, i = [], 0
        while i < len(symbols):
            if symbols[i:i + 2] == best:
                out.append(best[0] + best[1])
                i += 2  # both symbols are used up
            else:
                out.append(symbols[i])
                i += 1
        merged[tuple(out)] = count
    return best, merged


def _rewritten(words: dict[tuple[str, ...], int], pair: tuple[str, str], how: str) -> dict[tuple[str, ...], int]:
    """The words rewritten with two mistakes: `no_skip` (the pair's second symbol kept as well) or
    `first_only` (one merge per word)."""
    out = {}
    for symbols, count in words.items():
        at = [i for i in range(len(symbols) - 1) if symbols[i:i + 2] == pair][: 1 if how == "first_only" else None]
        if how == "no_skip":
            out[tuple(pair[0] + pair[1] if i in at else s for i, s in enumerate(symbols))] = count
            continue
        new, i = [], 0
        while i < len(symbols):
            new.append(pair[0] + pair[1] if i in at else symbols[i])
            i += 2 if i in at else 1
        out[tuple(new)] = count
    return out


def _split(*pieces: str) -> dict[tuple[str, ...], int]:
    return {tuple(text.split()): int(count) for text, count in (p.rsplit(":", 1) for p in pieces)}


@exercise("01.bpe_merge", bpe_merge, after=TOKENIZERS, imports="from collections import Counter", title="one BPE merge", intro="""
    Byte-pair encoding (Sennrich et al., 2016) starts from characters and repeatedly merges the most
    frequent pair of adjacent symbols into a new symbol, until the vocabulary has the size asked for.
    Write one merge: count the pairs (each word's pairs count as often as the word occurs), pick the most
    frequent, and rewrite the words with it.""", hint="""
    A Counter of pairs: for each (symbols, count), add count for each pair in zip(symbols, symbols[1:]).
    max(pairs, key=pairs.get) returns the first of the most frequent. To rewrite a word, walk it left to
    right: where symbols[i:i + 2] is the pair, emit the joined symbol and step 2, else emit symbols[i].""")
def check_bpe_merge(fn):
    cases = [_split("l o w </w>:5", "l o w e r </w>:2", "n e w e s t </w>:6", "w i d e s t </w>:3"),
             _split("a a a:3", "b a a:1"),  # (a, a): 'a a a' becomes 'aa a', the overlapping pair once
             _split("x y:1", "y z:1", "y z y z:1")]  # (y, z) three times, twice in one word
    for words in cases:  # the first: (e, s) 9 times, tied with (s, t) and (t, </w>); (e, s) comes first
        want_pair, want_words = bpe_merge(dict(words))
        got = fn(dict(words))
        what = f"bpe_merge({ {' '.join(k): v for k, v in words.items()} })"
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Mistake(f"{what}: return (pair, rewritten words), got {got!r:.80}")
        once = Counter(p for symbols in words for p in zip(symbols, symbols[1:]))
        weighted = Counter({p: sum(c for s, c in words.items() for q in zip(s, s[1:]) if q == p) for p in once})
        top = max(weighted.values())
        expect(tuple(got[0]), want_pair, what=f"{what}: the pair merged", known={
            "pairs were counted once per word: weight each pair by how often its word occurs":
                max(once, key=lambda p: once[p]),
            "a tie must go to the pair seen first, not the last one": [p for p in weighted if weighted[p] == top][-1]})
        expect(got[1], want_words, what=f"{what}: the words after merging {want_pair}", known={
            "after merging a pair, skip its second symbol: 'a a a' with (a, a) gives 'aa a', not 'aa aa a'":
                _rewritten(words, want_pair, "no_skip"),
            "only the first occurrence in each word was merged: merge every one":
                _rewritten(words, want_pair, "first_only")},
            otherwise="rewrite every word, keeping its count, with each occurrence of the pair as one symbol")
    return len(cases)
