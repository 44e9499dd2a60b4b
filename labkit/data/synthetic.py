"""A small English-like corpus that labkit generates itself: no download, same text every time.

A toy grammar with structure worth learning, so that even a tiny model trained for a minute
shows something real in its loss curve and its attention heads:

- agreement across a gap: "the dog near the cats *runs*" (the verb agrees with "dog", not with
  the nearer "cats"), also across a relative clause ("the dogs that the cat sees *run*");
- copying: a story names two people and later refers to them again ("mia met leo . later leo
  smiled"), the pattern that induction heads pick up;
- plain local statistics: determiners before nouns, adjectives before nouns, "." ending each
  sentence.

Each line is a short paragraph of a few sentences, lower case, tokens separated by spaces (like
WikiText-2 v1, so the whitespace tokenizer suits it). `synthetic_splits()` gives train / valid /
test lines drawn from the same grammar with different seeds.
"""

from __future__ import annotations

import random

NOUNS = {  # singular -> plural
    "dog": "dogs", "cat": "cats", "bird": "birds", "child": "children", "teacher": "teachers",
    "farmer": "farmers", "king": "kings", "robot": "robots", "horse": "horses", "doctor": "doctors",
}
ADJECTIVES = ["small", "old", "happy", "quiet", "red", "clever", "tired", "brave"]
INTRANSITIVE = {"runs": "run", "sleeps": "sleep", "sings": "sing", "waits": "wait", "laughs": "laugh"}
TRANSITIVE = {"sees": "see", "likes": "like", "follows": "follow", "helps": "help", "finds": "find"}
PREPOSITIONS = ["near", "behind", "with", "beside"]
ADVERBS = ["quickly", "slowly", "today", "again", "outside"]
NAMES = ["mia", "leo", "ana", "sam", "ivy", "max", "zoe", "tom", "eva", "ben"]
PLACES = ["the market", "the river", "the school", "the forest", "the castle"]
OBJECTS = ["a book", "an apple", "a key", "a letter", "a map"]


def _noun_phrase(rng: random.Random, plural: bool, depth: int) -> list[str]:
    noun = rng.choice(list(NOUNS))
    words = ["the"]
    if rng.random() < 0.35:
        words.append(rng.choice(ADJECTIVES))
    words.append(NOUNS[noun] if plural else noun)
    r = rng.random()
    if depth == 0 and r < 0.25:  # a distractor of the other number between subject and verb
        words += [rng.choice(PREPOSITIONS), *_noun_phrase(rng, not plural, depth + 1)]
    elif depth == 0 and r < 0.40:  # an object relative clause: "that the cat sees"
        inner_plural = rng.random() < 0.5
        verb = rng.choice(list(TRANSITIVE))
        words += ["that", *_noun_phrase(rng, inner_plural, depth + 1),
                  TRANSITIVE[verb] if inner_plural else verb]
    return words


def _agreement_sentence(rng: random.Random) -> list[str]:
    plural = rng.random() < 0.5
    subject = _noun_phrase(rng, plural, 0)
    if rng.random() < 0.5:
        verb = rng.choice(list(INTRANSITIVE))
        predicate = [INTRANSITIVE[verb] if plural else verb]
        if rng.random() < 0.4:
            predicate.append(rng.choice(ADVERBS))
    else:
        verb = rng.choice(list(TRANSITIVE))
        predicate = [TRANSITIVE[verb] if plural else verb, *_noun_phrase(rng, rng.random() < 0.5, 1)]
    return [*subject, *predicate, "."]


def _story(rng: random.Random) -> list[str]:
    a, b = rng.sample(NAMES, 2)
    place, thing = rng.choice(PLACES), rng.choice(OBJECTS)
    words = f"{a} met {b} at {place} . {a} gave {b} {thing} .".split()
    ending = rng.choice([f"later {b} smiled .", f"then {b} thanked {a} .",
                         f"{b} kept {thing.split()[-1]} and {a} went home ."])
    return words + ending.split()


def synthetic_lines(n_lines: int, seed: int = 0) -> list[str]:
    """`n_lines` paragraphs of 2 to 5 sentences, the same for the same seed."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words: list[str] = []
        for _ in range(rng.randint(2, 5)):
            words += _story(rng) if rng.random() < 0.25 else _agreement_sentence(rng)
        lines.append(" ".join(words))
    return lines


def synthetic_splits(train_lines: int = 4000, eval_lines: int = 300, seed: int = 0) -> dict[str, list[str]]:
    """Train, valid and test lines (about 37 words a line: 150k training words by default)."""
    return {"train": synthetic_lines(train_lines, seed),
            "valid": synthetic_lines(eval_lines, seed + 1),
            "test": synthetic_lines(eval_lines, seed + 2)}
