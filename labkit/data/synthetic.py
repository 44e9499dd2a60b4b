"""Corpora that labkit generates itself: no download, the same text for the same seed.

Each one isolates an ability, so that a tiny model trained for a minute shows something real and
an LSTM and a Transformer can be told apart on it:

- An English-like grammar. Its verbs agree in number with their subject across a gap of a chosen
  number of words: "the dog near the cats that the birds see *runs*". The gap is built from
  chunks: prepositional phrases ("near the cats") and relative clauses ("that the birds see",
  "that sees the cats") whose nouns are *attractors* when their number differs from the
  subject's. To choose the verb a model must remember the subject's number across the gap, the
  classic test of whether it tracks syntax (Linzen et al. 2016). `synthetic_lines` (the app
  demo's corpus, corpus "synthetic") mixes short gaps with little stories that name people
  twice; `agreement_lines` (corpus "synthetic-agreement") has longer gaps, and
  `agreement_items` the test sentences cut just before the verb, scored by
  `labkit.inspect.agreement_accuracy`.
- Copy sequences (corpus "synthetic-copy"): "s4 s9 s1 | s4 s9 s1". After the separator every
  token is predictable, but only by looking back: a Transformer can learn an *induction head*
  (attend to the token after the earlier occurrence of the current one), an RNN must hold the
  whole sequence in its state.
- Key-value recall (corpus "synthetic-recall"): "k3 v7 k1 v2 | k1 v2 k3 v7": after a key
  queried again, its value is predictable only by finding where the key was bound.

Lines are lower case, tokens separated by spaces (like WikiText-2 v1, so the whitespace tokenizer
suits them); the copy and recall symbols are their own (`s0`, `k0`, `v0`, ...).
`*_splits()` give train / valid / test lines from different seeds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from labkit.errors import LabkitError

NOUNS = {  # singular -> plural
    "dog": "dogs", "cat": "cats", "bird": "birds", "child": "children", "teacher": "teachers",
    "farmer": "farmers", "king": "kings", "robot": "robots", "horse": "horses", "doctor": "doctors",
}
ADJECTIVES = ["small", "old", "happy", "quiet", "red", "clever", "tired", "brave"]
INTRANSITIVE = {"runs": "run", "sleeps": "sleep", "sings": "sing", "waits": "wait", "laughs": "laugh"}
TRANSITIVE = {"sees": "see", "likes": "like", "follows": "follow", "helps": "help", "finds": "find"}
PREPOSITIONS = ["near", "behind", "with", "beside"]
ADVERBS = ["quickly", "slowly", "today", "again", "outside"]  # after the verb
PRE_ADVERBS = ["often", "never", "quickly", "slowly"]  # between subject and verb: one word of gap
NAMES = ["mia", "leo", "ana", "sam", "ivy", "max", "zoe", "tom", "eva", "ben"]
PLACES = ["the market", "the river", "the school", "the forest", "the castle"]
OBJECTS = ["a book", "an apple", "a key", "a letter", "a map"]

MAX_REDRAWS = 200  # agreement_items: draws per item before the model's vocabulary is said to lack the grammar
DEMO_DISTANCES = (0, 0, 0, 0, 1, 2, 3, 4, 5)  # mostly adjacent: the demo corpus is about all of English
SEPARATOR = "|"


# --- the agreement grammar ----------------------------------------------------------------
@dataclass(frozen=True)
class Subject:
    """A subject noun phrase with its gap: the words before the verb that must agree with it."""

    words: tuple[str, ...]  # "the", ("old",) head noun, then the gap
    plural: bool  # the number of the head noun, hence of the verb
    head: int  # index of the head noun in `words`
    attractors: int  # nouns in the gap whose number differs from the head's

    @property
    def distance(self) -> int:
        """Words between the head noun and the verb."""
        return len(self.words) - self.head - 1


def _verb(table: dict[str, str], plural: bool, rng: random.Random) -> str:
    singular = rng.choice(list(table))
    return table[singular] if plural else singular


def _noun_phrase(rng: random.Random, plural: bool, adjective: bool | None = None) -> list[str]:
    """"the [adjective] noun"; the adjective at random (35%) unless `adjective` says."""
    noun = rng.choice(list(NOUNS))
    with_adjective = rng.random() < 0.35 if adjective is None else adjective
    return ["the", *([rng.choice(ADJECTIVES)] if with_adjective else []), NOUNS[noun] if plural else noun]


# The gap is cut into chunks of known length. The first may be a subject relative clause (its
# verb agrees with the head, so it is a cue, not an attractor); the middle ones are prepositional
# phrases and object relative clauses (each brings one noun, plus a verb agreeing with that noun);
# a one-word adverb may end it. Lengths 3, 4, 5 for middle chunks reach every sum >= 3.
FIRST_LENGTHS = (0, 2, 4, 5)  # "", "that sleeps", "that sees the cats", "that sees the old cats"
MIDDLE_LENGTHS = (3, 4, 5)  # "near the cats", "near the old cats" | "that the cats see", "that the old cats see"


def _middle_reachable(n: int) -> bool:
    return n == 0 or n >= min(MIDDLE_LENGTHS)


def _gap_plan(rng: random.Random, distance: int) -> tuple[int, list[int], bool]:
    """Lengths of the first chunk, the middle chunks and the adverb (0 or 1) summing to `distance`."""
    firsts = [f for f in FIRST_LENGTHS if f <= distance]
    while True:  # a few draws at most: the choices below are then always completable
        first, adverb = rng.choice(firsts), rng.random() < 0.3
        rest = distance - first - adverb
        if rest >= 0 and _middle_reachable(rest):
            break
    middles = []
    while rest:
        length = rng.choice([m for m in MIDDLE_LENGTHS if m <= rest and _middle_reachable(rest - m)])
        middles.append(length)
        rest -= length
    return first, middles, adverb


def subject_phrase(rng: random.Random, plural: bool, distance: int, attract: float = 0.5) -> Subject:
    """A subject of number `plural` followed by exactly `distance` words of gap. Each noun in the
    gap has the other number with probability `attract` (1.0: every one is an attractor)."""
    if distance < 0:
        raise LabkitError(f"distance must be >= 0, got {distance}")
    words = _noun_phrase(rng, plural)
    head = len(words) - 1
    first, middles, adverb = _gap_plan(rng, distance)
    attractors = 0

    def gap_noun(adjective: bool) -> tuple[list[str], bool]:
        nonlocal attractors
        number = plural != (rng.random() < attract)
        attractors += number != plural
        return _noun_phrase(rng, number, adjective), number

    if first == 2:
        words += ["that", _verb(INTRANSITIVE, plural, rng)]
    elif first:
        verb = _verb(TRANSITIVE, plural, rng)
        words += ["that", verb, *gap_noun(first == 5)[0]]
    for length in middles:
        if length == 3 or (length == 4 and rng.random() < 0.5):  # a prepositional phrase
            words += [rng.choice(PREPOSITIONS), *gap_noun(length == 4)[0]]
        else:  # an object relative clause: its verb agrees with its own noun
            noun, number = gap_noun(length == 5)
            words += ["that", *noun, _verb(TRANSITIVE, number, rng)]
    if adverb:
        words.append(rng.choice(PRE_ADVERBS))
    return Subject(tuple(words), plural, head, attractors)


def agreement_sentence(rng: random.Random, distance: int, attract: float = 0.5) -> list[str]:
    """One sentence whose main verb sits `distance` words after its subject's head noun."""
    plural = rng.random() < 0.5
    subject = subject_phrase(rng, plural, distance, attract)
    if rng.random() < 0.5:
        predicate = [_verb(INTRANSITIVE, plural, rng)]
        if rng.random() < 0.4:
            predicate.append(rng.choice(ADVERBS))
    else:
        predicate = [_verb(TRANSITIVE, plural, rng), *_noun_phrase(rng, rng.random() < 0.5)]
    return [*subject.words, *predicate, "."]


def _story(rng: random.Random) -> list[str]:
    a, b = rng.sample(NAMES, 2)
    place, thing = rng.choice(PLACES), rng.choice(OBJECTS)
    words = f"{a} met {b} at {place} . {a} gave {b} {thing} .".split()
    ending = rng.choice([f"later {b} smiled .", f"then {b} thanked {a} .",
                         f"{b} kept {thing.split()[-1]} and {a} went home ."])
    return words + ending.split()


def synthetic_lines(n_lines: int, seed: int = 0) -> list[str]:
    """The demo corpus: `n_lines` paragraphs of 2 to 5 sentences (a quarter of them little stories,
    the rest agreement sentences with mostly short gaps), the same for the same seed."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words: list[str] = []
        for _ in range(rng.randint(2, 5)):
            words += _story(rng) if rng.random() < 0.25 else agreement_sentence(rng, rng.choice(DEMO_DISTANCES))
        lines.append(" ".join(words))
    return lines


def _splits(lines: Callable[[int, int], list[str]], train_lines: int, eval_lines: int,
            seed: int) -> dict[str, list[str]]:
    return {"train": lines(train_lines, seed), "valid": lines(eval_lines, seed + 1),
            "test": lines(eval_lines, seed + 2)}


def synthetic_splits(train_lines: int = 4000, eval_lines: int = 300, seed: int = 0) -> dict[str, list[str]]:
    """Train, valid and test lines (about 35 words a line: 140k training words by default)."""
    return _splits(synthetic_lines, train_lines, eval_lines, seed)


def agreement_lines(n_lines: int, seed: int = 0, max_distance: int = 12, attract: float = 0.5) -> list[str]:
    """Training text for agreement: lines of 1 to 3 sentences, each gap 0..`max_distance` words
    (uniform), each gap noun an attractor with probability `attract`."""
    rng = random.Random(seed)
    return [" ".join(w for _ in range(rng.randint(1, 3))
                     for w in agreement_sentence(rng, rng.randint(0, max_distance), attract))
            for _ in range(n_lines)]


@dataclass(frozen=True)
class AgreementItem:
    """A test sentence cut before its verb: does the model prefer `correct` to `wrong` next?"""

    prefix: str  # "the dog near the cats"
    correct: str  # "runs"
    wrong: str  # "run"
    distance: int  # words between the subject's head noun and the verb
    attractors: int  # nouns of the other number among them
    plural: bool  # the subject's number


def agreement_items(n_per_distance: int, distances: tuple[int, ...] = (0, 2, 4, 6, 8, 10, 12), seed: int = 0,
                    attract: float = 1.0, known: Callable[[str], bool] | None = None) -> list[AgreementItem]:
    """`n_per_distance` items at each distance, half singular and half plural subjects. By default
    every gap noun is an attractor (the hard case); `attract=0.5` matches the training text.
    `known`: which words a model's vocabulary has; items with another word (both verb forms
    included) are drawn again, so that a model trained on other text (WikiText-2 lacks "waits") is
    tested in its own words. With every word known the items are those drawn without `known`."""
    rng = random.Random(seed)
    items = []
    for distance in distances:
        for i in range(n_per_distance):
            plural = i % 2 == 1
            for _ in range(MAX_REDRAWS):
                subject = subject_phrase(rng, plural, distance, attract)
                singular = rng.choice(list(INTRANSITIVE) + list(TRANSITIVE))
                forms = (singular, (INTRANSITIVE | TRANSITIVE)[singular])
                if known is None or all(known(w) for w in (*subject.words, *forms)):
                    break
            else:
                raise LabkitError(f"no agreement sentence at distance {distance} in {MAX_REDRAWS} draws uses only "
                                  "words the model knows: its vocabulary lacks too much of the grammar (it was "
                                  "trained on other text: synthetic and synthetic-agreement runs know every word)")
            items.append(AgreementItem(" ".join(subject.words), forms[plural], forms[not plural],
                                       distance, subject.attractors, plural))
    return items


def agreement_splits(train_lines: int = 8000, eval_lines: int = 400, seed: int = 0) -> dict[str, list[str]]:
    """Agreement text: about 23 words a line, 190k training words by default."""
    return _splits(agreement_lines, train_lines, eval_lines, seed)


# --- copy and recall sequences ------------------------------------------------------------
@dataclass(frozen=True)
class SequenceItem:
    """A copy or recall line: the model reads `tokens` and must predict those at `scored`."""

    tokens: tuple[str, ...]
    scored: tuple[int, ...]  # indices into `tokens` predictable only by looking back
    length: int  # symbols copied, or key-value pairs bound

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


def copy_item(rng: random.Random, length: int, n_symbols: int = 32) -> SequenceItem:
    """`length` distinct symbols, the separator, the same symbols again. Distinct, so that each
    copied token has one earlier occurrence and the token after it is the next one to copy."""
    if not 1 <= length <= n_symbols:
        raise LabkitError(f"a copy length must be 1..{n_symbols} (the number of symbols), got {length}")
    first = [f"s{i}" for i in rng.sample(range(n_symbols), length)]
    tokens = (*first, SEPARATOR, *first)
    return SequenceItem(tokens, tuple(range(length + 1, 2 * length + 1)), length)


def recall_item(rng: random.Random, pairs: int, queries: int | None = None, n_keys: int = 24,
                n_values: int = 24) -> SequenceItem:
    """`pairs` bindings "k v" (distinct keys), the separator, then `queries` of the keys again, each
    followed by its value (all of them, in a new order, by default)."""
    if not 1 <= pairs <= n_keys:
        raise LabkitError(f"pairs must be 1..{n_keys} (the number of keys), got {pairs}")
    keys = rng.sample(range(n_keys), pairs)
    value = {k: rng.randrange(n_values) for k in keys}
    asked = rng.sample(keys, pairs if queries is None else min(queries, pairs))
    tokens = [w for k in keys for w in (f"k{k}", f"v{value[k]}")] + [SEPARATOR]
    scored = []
    for k in asked:
        tokens.append(f"k{k}")
        scored.append(len(tokens))
        tokens.append(f"v{value[k]}")
    return SequenceItem(tuple(tokens), tuple(scored), pairs)


def sequence_items(make: Callable[..., SequenceItem], n_per_length: int, lengths: tuple[int, ...],
                   seed: int = 0) -> list[SequenceItem]:
    """`n_per_length` items of each length from `copy_item` or `recall_item`, for scoring."""
    rng = random.Random(seed)
    return [make(rng, length) for length in lengths for _ in range(n_per_length)]


def copy_lines(n_lines: int, seed: int = 0, max_length: int = 20) -> list[str]:
    """Training text: one copy sequence a line, lengths 1..`max_length` (uniform)."""
    rng = random.Random(seed)
    return [copy_item(rng, rng.randint(1, max_length)).text for _ in range(n_lines)]


def recall_lines(n_lines: int, seed: int = 0, max_pairs: int = 10) -> list[str]:
    """Training text: one recall sequence a line, 1..`max_pairs` bindings (uniform)."""
    rng = random.Random(seed)
    return [recall_item(rng, rng.randint(1, max_pairs)).text for _ in range(n_lines)]


def copy_splits(train_lines: int = 8000, eval_lines: int = 400, seed: int = 0) -> dict[str, list[str]]:
    """Copy text: about 22 tokens a line, 175k training tokens by default."""
    return _splits(copy_lines, train_lines, eval_lines, seed)


def recall_splits(train_lines: int = 8000, eval_lines: int = 400, seed: int = 0) -> dict[str, list[str]]:
    """Recall text: about 23 tokens a line, 185k training tokens by default."""
    return _splits(recall_lines, train_lines, eval_lines, seed)


# DataConfig(corpus=NAME) reads these (labkit.data.lm), so pretrain, resume and evaluate work on
# them like on any corpus.
CORPORA: dict[str, Callable[[], dict[str, list[str]]]] = {
    "synthetic": synthetic_splits, "synthetic-agreement": agreement_splits,
    "synthetic-copy": copy_splits, "synthetic-recall": recall_splits,
}
