"""labkit.data.synthetic's probes (agreement grammar, copy and recall sequences), their scorers in
labkit.inspect.probes, and benchmarks/probes.py. Unit tests: no data files, hand-built models."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from labkit.data import DataConfig, WordTokenizer, load_lm_data
from labkit.data import synthetic as syn
from labkit.errors import LabkitError
from labkit.inspect import agreement_accuracy, agreement_margins, copy_accuracy, in_vocabulary, overall, word_copy_items
from labkit.models import LMOutput

PLURAL_NOUNS = set(syn.NOUNS.values())
ALL_NOUNS = set(syn.NOUNS) | PLURAL_NOUNS
SINGULAR_VERBS = set(syn.INTRANSITIVE) | set(syn.TRANSITIVE)
PLURAL_VERBS = set(syn.INTRANSITIVE.values()) | set(syn.TRANSITIVE.values())


# --- the grammar ----------------------------------------------------------------------------
def test_the_gap_has_exactly_the_asked_distance_and_counts_its_attractors():
    rng = random.Random(0)
    for distance in range(16):
        for _ in range(40):
            plural = rng.random() < 0.5
            s = syn.subject_phrase(rng, plural, distance, attract=0.5)
            assert s.distance == distance and len(s.words) - s.head - 1 == distance
            assert s.words[s.head] in (PLURAL_NOUNS if plural else set(syn.NOUNS))
            gap_nouns = [w for w in s.words[s.head + 1:] if w in ALL_NOUNS]
            assert s.attractors == sum((w in PLURAL_NOUNS) != plural for w in gap_nouns)
    with pytest.raises(LabkitError):
        syn.subject_phrase(rng, True, -1)


def test_every_gap_noun_is_an_attractor_when_attract_is_one():
    rng = random.Random(1)
    for distance in (3, 7, 12):
        s = syn.subject_phrase(rng, False, distance, attract=1.0)
        gap_nouns = [w for w in s.words[s.head + 1:] if w in ALL_NOUNS]
        assert gap_nouns and all(w in PLURAL_NOUNS for w in gap_nouns) and s.attractors == len(gap_nouns)
    assert syn.subject_phrase(rng, True, 9, attract=0.0).attractors == 0


def test_sentences_put_an_agreeing_verb_right_after_the_gap():
    for seed in range(200):
        distance = seed % 13
        words = syn.agreement_sentence(random.Random(seed), distance)
        head = 1 if words[1] in ALL_NOUNS else 2  # "the noun" or "the adjective noun"
        verb = words[head + 1 + distance]
        assert verb in (PLURAL_VERBS if words[head] in PLURAL_NOUNS else SINGULAR_VERBS), " ".join(words)
        assert words[-1] == "."


def test_agreement_items_are_deterministic_balanced_and_cut_before_the_verb():
    items = syn.agreement_items(6, distances=(0, 3, 8), seed=4)
    assert items == syn.agreement_items(6, distances=(0, 3, 8), seed=4)
    assert items != syn.agreement_items(6, distances=(0, 3, 8), seed=5)
    assert [it.distance for it in items] == [0] * 6 + [3] * 6 + [8] * 6
    assert sum(it.plural for it in items) == 9
    for it in items:
        words = it.prefix.split()
        head = next(w for w in words if w in ALL_NOUNS)  # the first noun is the subject's head
        assert (head in PLURAL_NOUNS) == it.plural
        assert it.correct in (PLURAL_VERBS if it.plural else SINGULAR_VERBS)
        assert {it.correct, it.wrong} in ({s, p} for s, p in (syn.INTRANSITIVE | syn.TRANSITIVE).items())
        assert len(words) - words.index(head) - 1 == it.distance


def test_training_lines_are_deterministic():
    assert syn.agreement_lines(30, seed=2) == syn.agreement_lines(30, seed=2) != syn.agreement_lines(30, seed=3)
    assert syn.copy_lines(30, seed=2) == syn.copy_lines(30, seed=2) != syn.copy_lines(30, seed=3)
    assert syn.recall_lines(30, seed=2) == syn.recall_lines(30, seed=2)


# --- copy and recall ------------------------------------------------------------------------
def test_copy_items_repeat_distinct_symbols_and_score_the_copy():
    for length in (1, 5, 32):
        item = syn.copy_item(random.Random(length), length)
        first, second = item.tokens[:length], item.tokens[length + 1:]
        assert item.tokens[length] == syn.SEPARATOR and first == second and len(set(first)) == length
        assert [item.tokens[i] for i in item.scored] == list(second)
    with pytest.raises(LabkitError):
        syn.copy_item(random.Random(0), 33)


def test_recall_items_score_the_value_bound_to_each_queried_key():
    item = syn.recall_item(random.Random(3), 6)
    cut = item.tokens.index(syn.SEPARATOR)
    bound = dict(zip(item.tokens[:cut:2], item.tokens[1:cut:2]))
    assert len(bound) == 6 and item.length == 6 and len(item.scored) == 6
    for i in item.scored:
        assert item.tokens[i] == bound[item.tokens[i - 1]] and i > cut
    assert len(syn.recall_item(random.Random(3), 6, queries=2).scored) == 2


@pytest.mark.parametrize("corpus, symbols", [("synthetic-copy", 33), ("synthetic-recall", 49)])
def test_synthetic_task_corpora_are_data_options(corpus, symbols):
    data = load_lm_data(DataConfig(corpus=corpus, train_tokens=2000))
    assert data.train.numel() == 2000
    assert data.tokenizer.vocab_size == symbols + 2  # the task's symbols, the separator, <unk>, <eos>
    assert data.tokenizer.unk_id not in data.valid.tolist()


def test_agreement_corpus_is_a_data_option():
    data = load_lm_data(DataConfig(corpus="synthetic-agreement", eval_tokens=500))
    words = set(data.tokenizer.vocab.itos)
    assert PLURAL_VERBS | SINGULAR_VERBS | ALL_NOUNS <= words and data.valid.numel() == 500


# --- hand-built models for the scorers -------------------------------------------------------
class Rule(nn.Module):
    """A language model written by hand: a rule maps the tokens read so far to a hidden vector,
    and a fixed output layer maps it to logits. Not trained, exactly known."""

    def __init__(self, width: int, vocab_size: int):
        super().__init__()
        self.config = SimpleNamespace(family="rule", vocab_size=vocab_size)
        self.head = nn.Linear(width, vocab_size, bias=False)
        nn.init.zeros_(self.head.weight)

    def features(self, ids: list[int]) -> list[list[float]]:
        raise NotImplementedError

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)

    def forward(self, idx: torch.Tensor, state=None, *, compute_logits: bool = True, **_) -> LMOutput:
        hidden = torch.tensor([self.features(row) for row in idx.tolist()])  # (B, T, width)
        return LMOutput(self.logits(hidden) if compute_logits else None, hidden)


class AgreementRule(Rule):
    """Hidden = one-hot number of the first noun since the line start (the subject's head); the
    output layer adds 1 to the logits of the verb forms of that number. With `always_singular`,
    every position says singular."""

    def __init__(self, tokenizer: WordTokenizer, always_singular: bool = False):
        super().__init__(2, tokenizer.vocab_size)
        self.always_singular = always_singular
        self.number = {tokenizer.vocab[w]: int(w in PLURAL_NOUNS) for w in ALL_NOUNS}
        with torch.no_grad():
            for verbs, column in ((SINGULAR_VERBS, 0), (PLURAL_VERBS, 1)):
                for v in verbs:
                    self.head.weight[tokenizer.vocab[v], column] = 1.0

    def features(self, ids):
        out, number = [], None
        for i in ids:
            number = self.number.get(i) if number is None else number
            out.append([1.0, 0.0] if self.always_singular else [0.0, 0.0] if number is None else
                       [1.0 - number, float(number)])
        return out


class CopyRule(Rule):
    """Predicts, after a token seen before, the token that followed it (after the separator, the
    line's first symbol): a perfect copier. With `constant`, always that one token."""

    def __init__(self, tokenizer: WordTokenizer, constant: str | None = None):
        super().__init__(tokenizer.vocab_size, tokenizer.vocab_size)
        self.constant = tokenizer.vocab[constant] if constant else None
        self.separator = tokenizer.vocab[syn.SEPARATOR]
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(tokenizer.vocab_size))

    def features(self, ids):
        out = []
        for t, i in enumerate(ids):
            guess = self.constant
            if guess is None and i == self.separator:
                guess = ids[1]
            elif guess is None and i in ids[:t]:
                guess = ids[ids.index(i) + 1]
            out.append([float(guess == v) for v in range(self.head.in_features)])
        return out


@pytest.fixture(scope="module")
def agreement_tokenizer():
    return WordTokenizer.train(syn.agreement_lines(300), specials=("<unk>", "<eos>"))


def test_agreement_scorer_oracle_scores_one_and_always_singular_scores_half(agreement_tokenizer):
    items = syn.agreement_items(8, distances=(0, 2, 5, 9), seed=0)
    oracle = agreement_accuracy(AgreementRule(agreement_tokenizer), agreement_tokenizer, items)
    assert [r["distance"] for r in oracle] == [0, 2, 5, 9] and all(r["count"] == 8 for r in oracle)
    assert all(r["accuracy"] == 1.0 and r["margin"] == pytest.approx(1.0) for r in oracle)
    singular = agreement_accuracy(AgreementRule(agreement_tokenizer, always_singular=True), agreement_tokenizer, items)
    assert all(r["accuracy"] == 0.5 and r["margin"] == pytest.approx(0.0) for r in singular)
    margins = agreement_margins(AgreementRule(agreement_tokenizer, always_singular=True), agreement_tokenizer, items)
    assert margins == pytest.approx([-1.0 if it.plural else 1.0 for it in items])
    by_attractors = agreement_accuracy(AgreementRule(agreement_tokenizer), agreement_tokenizer, items, by="attractors")
    assert sum(r["count"] for r in by_attractors) == len(items) and overall(by_attractors) == 1.0
    with pytest.raises(LabkitError):
        agreement_accuracy(AgreementRule(agreement_tokenizer), agreement_tokenizer, items, by="words")


def test_agreement_scorer_refuses_a_vocabulary_without_the_words():
    tok = WordTokenizer.train(["the dog runs ."], specials=("<unk>", "<eos>"))
    with pytest.raises(LabkitError, match="outside the run's vocabulary"):
        agreement_accuracy(AgreementRule(tok), tok, syn.agreement_items(2, distances=(4,)))


def test_copy_scorer_against_a_perfect_copier_and_a_constant_guess():
    tok = WordTokenizer.train(syn.copy_lines(400), specials=("<unk>", "<eos>"))
    items = syn.sequence_items(syn.copy_item, 10, (1, 4, 9), seed=2)
    perfect = copy_accuracy(CopyRule(tok), tok, items)
    assert [(r["length"], r["count"], r["accuracy"], r["sequence_accuracy"]) for r in perfect] == \
        [(1, 10, 1.0, 1.0), (4, 10, 1.0, 1.0), (9, 10, 1.0, 1.0)]
    constant = copy_accuracy(CopyRule(tok, constant="s0"), tok, items)
    for row, length in zip(constant, (1, 4, 9)):
        mine = [it for it in items if it.length == length]
        hits = sum(it.tokens[i] == "s0" for it in mine for i in it.scored)
        assert row["accuracy"] == pytest.approx(hits / (length * 10))
        assert row["sequence_accuracy"] == sum(all(it.tokens[i] == "s0" for i in it.scored) for it in mine) / 10


def test_copy_scorer_reads_recall_items_too():
    tok = WordTokenizer.train(syn.recall_lines(400), specials=("<unk>", "<eos>"))
    items = syn.sequence_items(syn.recall_item, 5, (2, 6), seed=1)
    rows = copy_accuracy(CopyRule(tok), tok, items)  # a key seen before: the value that followed it
    assert [r["accuracy"] for r in rows] == [1.0, 1.0]
    with pytest.raises(LabkitError):  # the agreement words are not recall symbols
        copy_accuracy(CopyRule(tok), WordTokenizer.train(["a b"], specials=("<unk>", "<eos>")), items)


# --- the measurement script -------------------------------------------------------------------


def test_in_vocabulary_keeps_the_sentences_whose_every_word_is_known():
    items = syn.agreement_items(6, distances=(0, 3, 6), seed=1, attract=1.0)
    words = {w for it in items for w in f"{it.prefix} {it.correct} {it.wrong}".split()}
    missing = sorted(w for w in words if sum(w in f"{it.prefix} {it.correct} {it.wrong}".split() for it in items) > 1)[0]
    tok = WordTokenizer.train([" ".join(sorted(words - {missing}))], specials=("<unk>", "<eos>"))
    kept = in_vocabulary(tok, items)
    assert kept == [it for it in items if missing not in f"{it.prefix} {it.correct} {it.wrong}".split()]
    assert 0 < len(kept) < len(items)
    assert in_vocabulary(WordTokenizer.train([" ".join(sorted(words))], specials=("<unk>", "<eos>")), items) == items


def test_word_copy_items_take_the_frequent_plain_words_and_score_after_the_first():
    counts = {"a": 9, "b": 8, ".": 7, "Cap": 6, "c": 5, "d": 4, "x1": 3, "e": 2, "f": 1, "|": 1}
    line = " ".join(w for w, n in counts.items() for _ in range(n))
    tok = WordTokenizer.train([line], specials=("<unk>", "<eos>"))
    ids = torch.tensor(tok.encode(line))
    # pool 4: among the 6 most frequent tokens the plain lower-case words are a, b, c, d ("e" is 8th)
    items = word_copy_items(tok, ids, 5, (1, 2, 3), seed=0, pool=4)
    assert [it.length for it in items] == [2] * 5  # 1: nothing to score; 3: needs 6 words, the pool has 4
    for it in items:
        assert len(set(it.tokens[:2])) == 2 and set(it.tokens[:2]) <= {"a", "b", "c", "d"}
        assert it.tokens == (*it.tokens[:2], ".", *it.tokens[:2]) and it.scored == (4,)
    rows = copy_accuracy(CopyRule(tok), tok, items)  # a perfect copier gets every scored word
    assert [(r["length"], r["count"], r["accuracy"]) for r in rows] == [(2, 5, 1.0)]
    V = tok.vocab_size  # its logits: 1 for the word it copies, 0 for every other
    assert rows[0]["loss"] == pytest.approx(math.log(math.e + V - 1) - 1)
    control = word_copy_items(tok, ids, 5, (1, 2, 3), seed=0, pool=4, control=True)
    for it, mine in zip(control, items):  # the same second half after two other words, scored alike
        assert it.tokens[2:] == mine.tokens[2:] and it.scored == mine.scored
        assert not set(it.tokens[:2]) & set(mine.tokens[3:]) and set(it.tokens[:2]) <= {"a", "b", "c", "d"}
    rows = copy_accuracy(CopyRule(tok), tok, control)  # nothing seen before: a uniform guess
    assert rows[0]["loss"] == pytest.approx(math.log(V)) and rows[0]["accuracy"] == 0.0
