"""Labelled sentence tasks for fine-tuning, encoded for a pretrained tokenizer.

- `sst2`: SST-2 sentiment (GLUE). Model selection uses a validation split held out from SST-2
  train; SST-2 dev, whose labels GLUE publishes (its test labels are private), is the reported
  test set.
- `imdb`: IMDB movie-review sentiment (Maas et al. 2011), 25,000 labelled reviews to train on and
  25,000 to test; model selection on a validation split held out from the training reviews, as
  for SST-2. The raw reviews are brought to SST-2's tokens first (`review_to_sst`), so the same
  normalisation then reads both. Its 50,000 unlabelled reviews are text for the language-model
  step (`unlabelled_stream`).
- `number`: a stand-in that needs no download: noun phrases of labkit's synthetic grammar,
  labelled by the number of their head noun. Some carry a distractor of the other number ("the
  dog near the cats" is singular), so the label needs the head noun, not the nearest one.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labkit.data import synthetic
from labkit.data.corpora import imdb, sst2
from labkit.data.normalize import CaseMapper, review_to_sst, sst_to_wikitext
from labkit.data.tokenizers import Tokenizer, WordTokenizer
from labkit.errors import LabkitError

TASKS = {"sst2": ("negative", "positive"), "imdb": ("negative", "positive"), "number": ("singular", "plural")}
SPLIT_SEED = 1234  # one fixed validation split for every run
UNLABELLED = ("imdb", "sst2")  # tasks with unlabelled text of their domain (unlabelled_stream)


@dataclass
class TaskData:
    train: list[tuple[list[int], int]]
    val: list[tuple[list[int], int]]
    test: list[tuple[list[int], int]]
    labels: tuple[str, ...]
    oov_rate: float  # share of tokens that map to <unk> after normalisation
    # every training sentence of the task when `train` is a subset of them (`subset`): the text a
    # language-model step on the task may read, labels unread
    all_train: list[tuple[list[int], int]] | None = None
    tokenizer: Any = None  # the tokenizer the ids are of (None: the caller's)

    def subset(self, n: int | None, seed: int = 0) -> TaskData:
        """The first `n` training examples of a seeded shuffle (all with None); the same val and test."""
        if n is None or n >= len(self.train):
            return self
        order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(seed))[:n].tolist()
        return TaskData([self.train[i] for i in order], self.val, self.test, self.labels, self.oov_rate,
                        self.all_train or self.train, self.tokenizer)


class TextEncoder:
    """Sentence -> ids under a pretrained tokenizer, with SST -> WikiText normalisation."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        word = isinstance(tokenizer, WordTokenizer) and tokenizer.kind == "whitespace"
        self.case = CaseMapper(tokenizer.vocab) if word else None

    def text(self, sentence: str) -> str:
        """The sentence as the tokenizer reads it: WikiText's conventions, the vocabulary's casing."""
        text = sst_to_wikitext(sentence)
        return self.case.sentence(text) if self.case is not None else text

    def __call__(self, sentence: str) -> list[int]:
        return self.tokenizer.encode(self.text(sentence))


def task_words(sentences: Iterable[str], encode: TextEncoder, min_count: int) -> list[str]:
    """The words of `sentences` (normalised as `encode` reads them) that its vocabulary lacks and
    that occur at least `min_count` times, the most frequent first: the words a pretrained body
    meets as <unk> in a task's text. Only a word tokenizer has such words (BPE spells any word)."""
    if encode.case is None or min_count < 1:
        return []
    vocab = encode.tokenizer.vocab
    counts = Counter(w for sentence in sentences for w in encode.text(sentence).split() if w not in vocab)
    return [w for w, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if n >= min_count]


def number_task_rows(n: int, seed: int) -> list[tuple[str, int]]:
    """`n` noun phrases from the synthetic grammar labelled 0 (singular head) or 1 (plural head)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        plural = rng.random() < 0.5
        subject = synthetic.subject_phrase(rng, plural, rng.choice(synthetic.DEMO_DISTANCES))
        rows.append((" ".join(subject.words), int(plural)))
    return rows


def task_rows(task: str, data_dir: str | Path | None = None,
              val_size: int = 2000) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[tuple[str, int]]]:
    """(train, val, test) rows of (sentence, label)."""
    if task not in TASKS:
        raise LabkitError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "number":
        return number_task_rows(8000, 11), number_task_rows(val_size, 12), number_task_rows(872, 13)
    if task == "imdb":
        rows, test = ([(review_to_sst(review), label) for review, label in imdb(split, data_dir)]
                      for split in ("train", "test"))
    else:
        rows, test = sst2("train", data_dir), sst2("dev", data_dir)
    if val_size >= len(rows):
        raise LabkitError(f"--val-size {val_size} leaves none of the {len(rows)} training sentences of {task} to train on")
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    return [rows[i] for i in order[val_size:]], [rows[i] for i in order[:val_size]], test


def unlabelled_stream(task: str, encode: TextEncoder, data_dir: str | Path | None = None) -> tuple[torch.Tensor, int]:
    """The task's unlabelled texts as one language-modelling stream (each text's ids, then `<eos>`),
    encoded as `encode` reads the task, and how many texts: IMDB's 50,000 unsup reviews, for imdb
    and for sst2 (SST-2's sentences come from movie reviews and it has no unlabelled text of its
    own: IMDB's are text of its domain, found as the imdb corpus is, not in SST-2's `data_dir`).
    The number task has none."""
    if task not in UNLABELLED:
        raise LabkitError(f"the {task} task has no unlabelled text ({' and '.join(UNLABELLED)} have IMDB's 50,000 "
                          "unsup reviews); the language-model step can read its labelled sentences (lm_text labelled or all)")
    eos = torch.tensor([encode.tokenizer.eos_id], dtype=torch.int32)
    parts = [t for review, _ in imdb("unsup", data_dir if task == "imdb" else None)
             for t in (torch.tensor(encode(review_to_sst(review)), dtype=torch.int32), eos)]
    return (torch.cat(parts).long() if parts else torch.zeros(0, dtype=torch.long)), len(parts) // 2


def load_task(task: str, encode: TextEncoder, *, data_dir: str | Path | None = None, val_size: int = 2000,
              train_size: int | None = None, seed: int = 0) -> TaskData:
    """The task's splits encoded with `encode`; `train_size` labelled sentences of a seeded draw."""
    train_rows, val_rows, test_rows = task_rows(task, data_dir, val_size)
    if train_size is not None and train_size > len(train_rows):
        raise LabkitError(f"--train-size {train_size} exceeds the {len(train_rows)} training sentences "
                          "left after the validation split")
    unk, counts = encode.tokenizer.unk_id, [0, 0]  # [unknown, total]

    def encode_all(part: list[tuple[str, int]]) -> list[tuple[list[int], int]]:
        out = []
        for sentence, label in part:
            ids = encode(sentence)
            counts[0] += sum(i == unk for i in ids)
            counts[1] += len(ids)
            out.append((ids, label))
        return out

    if train_size is not None:
        sub = torch.Generator().manual_seed(seed)
        train_rows = [train_rows[i] for i in torch.randperm(len(train_rows), generator=sub)[:train_size].tolist()]
    train, val, test = encode_all(train_rows), encode_all(val_rows), encode_all(test_rows)
    return TaskData(train, val, test, TASKS[task], counts[0] / max(counts[1], 1), tokenizer=encode.tokenizer)


def task_tokenizer(task: str, tokenizer: Tokenizer, min_count: int, *, data_dir: str | Path | None = None,
                   val_size: int = 2000) -> Tokenizer:
    """`tokenizer` with the words of the task's training sentences that it lacks and that occur at
    least `min_count` times appended (`task_words`): the sentences held out for validation and the
    test sentences are never read for it, nor any label."""
    if not isinstance(tokenizer, WordTokenizer) or min_count < 1:
        return tokenizer
    train_rows, _, _ = task_rows(task, data_dir, val_size)
    return tokenizer.extended(task_words((sentence for sentence, _ in train_rows), TextEncoder(tokenizer), min_count))
