"""Scoring a model on labkit's synthetic probes (labkit.data.synthetic).

- `agreement_accuracy`: for each test sentence cut before its verb ("the dog near the cats"), does
  the model give the verb form that agrees with the subject ("runs") a higher probability than the
  other form ("run")? Reported by distance (words between subject and verb) or by number of
  attractors. Chance is 50%; a model that always prefers the singular scores exactly 50% on the
  balanced items, so only tracking the subject gets above it.
- `copy_accuracy`: on copy or recall lines, how often is the greedy next-token prediction (the
  arg-max) right at the positions predictable only by looking back? Reported by length
  (symbols copied, or key-value pairs bound), per token and per whole sequence.
- On a model trained on another corpus (WikiText-2): `in_vocabulary` keeps the agreement
  sentences whose words it knows, and `word_copy_items` makes copy lines of its own frequent words.

Every item is read as the start of a line (after `<eos>`), as the training text presents it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from labkit.data.synthetic import AgreementItem, SequenceItem
from labkit.errors import LabkitError
from labkit.inspect.inputs import batches
from labkit.inspect.running import log_probs_at


def _known(tokenizer: Any, ids: Sequence[int], what: str) -> None:
    if tokenizer.unk_id is not None and tokenizer.unk_id in ids:
        raise LabkitError(f"{what} has words outside the run's vocabulary: score a run trained on the "
                          "matching synthetic corpus (labkit.data.synthetic.CORPORA)")


def _continuation(tokenizer: Any, prefix: list[int], text: str) -> list[int]:
    """The ids that `text` adds after the prefix's (BPE may tokenize a word by its left context)."""
    full = tokenizer.encode(text)
    if full[:len(prefix)] != prefix or len(full) == len(prefix):
        raise LabkitError(f"cannot split {text!r} into the prefix's tokens and the verb's: use a word tokenizer")
    return full[len(prefix):]


def agreement_margins(model: nn.Module, tokenizer: Any, items: Sequence[AgreementItem], *,
                      batch_size: int = 64) -> list[float]:
    """Per item: log P(correct verb | prefix) - log P(wrong verb | prefix), in nats (> 0: right)."""
    margins = []
    for chunk in batches(items, batch_size):
        sequences, positions, targets = [], [], []
        for item in chunk:
            prefix = tokenizer.encode(item.prefix)
            context = [tokenizer.eos_id, *prefix]
            for form in (item.correct, item.wrong):
                verb = _continuation(tokenizer, prefix, f"{item.prefix} {form}")
                _known(tokenizer, prefix + verb, f"{item.prefix!r} + {form!r}")
                sequences.append(context + verb[:-1])
                positions.append(list(range(len(context) - 1, len(context) - 1 + len(verb))))
                targets.append(verb)
        rows = log_probs_at(model, sequences, positions, tokenizer.pad_id)
        scores = [float(r[torch.arange(len(t)), t].sum()) for r, t in zip(rows, targets)]  # log P(verb | prefix)
        margins += [scores[i] - scores[i + 1] for i in range(0, len(scores), 2)]
    return margins


def agreement_accuracy(model: nn.Module, tokenizer: Any, items: Sequence[AgreementItem], *,
                       by: str = "distance", batch_size: int = 64) -> list[dict[str, float]]:
    """Rows {by: value, "count", "accuracy", "margin"} sorted by `by` ("distance" or
    "attractors"): the share of items where the agreeing verb is more probable (a tie counts as
    wrong), and the mean log-probability margin in nats."""
    if by not in ("distance", "attractors"):
        raise LabkitError(f"by must be 'distance' or 'attractors', got {by!r}")
    groups: dict[int, list[float]] = defaultdict(list)
    for item, margin in zip(items, agreement_margins(model, tokenizer, items, batch_size=batch_size)):
        groups[getattr(item, by)].append(margin)
    return [{by: key, "count": len(m), "accuracy": sum(x > 0 for x in m) / len(m), "margin": sum(m) / len(m)}
            for key, m in sorted(groups.items())]


def copy_accuracy(model: nn.Module, tokenizer: Any, items: Sequence[SequenceItem], *,
                  batch_size: int = 64) -> list[dict[str, float]]:
    """Rows {"length", "count", "accuracy", "sequence_accuracy", "loss"} sorted by length: the
    share of scored tokens whose greedy prediction is right, of items with every one right, and
    the mean loss (nats) of the scored tokens."""
    tokens: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # length -> [right, total]
    whole: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    nats: dict[int, float] = defaultdict(float)
    for chunk in batches(items, batch_size):
        sequences = []
        for item in chunk:
            ids = tokenizer.encode(item.text)
            if len(ids) != len(item.tokens):
                raise LabkitError("the tokenizer splits the copy symbols: score a run with a word tokenizer "
                                  "trained on corpus 'synthetic-copy' or 'synthetic-recall'")
            _known(tokenizer, ids, "the copy item")
            sequences.append([tokenizer.eos_id, *ids])
        # token i of an item sits at index i + 1 after <eos>, so it is predicted at index i
        rows = log_probs_at(model, sequences, [list(item.scored) for item in chunk], tokenizer.pad_id)
        for item, ids, row in zip(chunk, sequences, rows):
            targets = torch.tensor([ids[i + 1] for i in item.scored])
            right = (row.argmax(-1) == targets).tolist()
            nats[item.length] -= float(row[torch.arange(len(targets)), targets].sum())
            tokens[item.length][0] += sum(right)
            tokens[item.length][1] += len(right)
            whole[item.length][0] += all(right)
            whole[item.length][1] += 1
    return [{"length": n, "count": whole[n][1], "accuracy": tokens[n][0] / tokens[n][1],
             "sequence_accuracy": whole[n][0] / whole[n][1], "loss": nats[n] / tokens[n][1]} for n in sorted(tokens)]


def in_vocabulary(tokenizer: Any, items: Sequence[AgreementItem]) -> list[AgreementItem]:
    """The agreement items whose words (the prefix and both verb forms) are all in the tokenizer's
    vocabulary: labkit's synthetic sentences, for a model trained on another corpus."""
    unk = tokenizer.unk_id
    if unk is None:
        return list(items)
    return [i for i in items if unk not in tokenizer.encode(f"{i.prefix} {i.correct} {i.wrong}")]


def word_copy_items(tokenizer: Any, train_ids: torch.Tensor, n_per_length: int, lengths: Sequence[int], *,
                    seed: int = 0, pool: int = 1000, control: bool = False) -> list[SequenceItem]:
    """Copy lines in a corpus's own words: `length` distinct words drawn from its most frequent
    plain words (lower-case letters only, among the 1.5 x `pool` most frequent tokens of
    `train_ids`; at most `pool`), ".", the same words again. Scored on the repeated words after the
    first: the first is a guess, each later one follows its earlier occurrence. With `control`, the
    same second halves after a first half of other words (nothing to copy), scored at the same
    positions: the baseline the repeat's loss is compared with. A length needing more words than the
    pool holds (twice the length) is left out."""
    counts = torch.bincount(train_ids, minlength=tokenizer.vocab_size)
    frequent = [tokenizer.decode([int(i)]) for i in counts.argsort(descending=True)[:3 * pool // 2] if counts[i] > 0]
    words = [w for w in frequent if w.isalpha() and w.islower()][:pool]
    rng, items = random.Random(seed), []
    for length in (n for n in lengths if 2 <= n and 2 * n <= len(words)):
        for _ in range(n_per_length):
            both = rng.sample(words, 2 * length)  # the line's words, and the control's other words
            second = both[:length]
            items.append(SequenceItem((*(both[length:] if control else second), ".", *second),
                                      tuple(range(length + 2, 2 * length + 1)), length))
    return items


def overall(rows: Sequence[dict[str, float]], key: str = "accuracy") -> float:
    """The count-weighted mean of `key` over the rows of a probe table."""
    total = sum(r["count"] for r in rows)
    return sum(r[key] * r["count"] for r in rows) / total if total else float("nan")
