"""Language-modelling data: a corpus, a tokenizer, and the three splits as token streams."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch

from labkit.atomic import check_regular
from labkit.config import JSONConfig
from labkit.data.corpora import imdb, wikitext2_lines, wikitext103_lines
from labkit.data.normalize import review_to_wikitext
from labkit.data.synthetic import CORPORA as SYNTHETIC_CORPORA
from labkit.data.tokenizers import KINDS, Tokenizer, build_tokenizer, count_words
from labkit.errors import DataNotFoundError, LabkitError

SPLITS = ("train", "valid", "test")
MAX_CORPUS_BYTES = 512 << 20  # a text file read whole, then tokenized in Python: a few GB of memory at this size
MAX_BPE_VOCAB = 1_000_000
CHUNK_LINES = 8192  # lines encoded at a time: a corpus's ids are never one Python list
NAMED = ("wikitext-2", "wikitext-103", "imdb")  # corpora labkit downloads


@dataclass
class DataConfig(JSONConfig):
    # "wikitext-2", "wikitext-103", "imdb" (its 50,000 unlabelled reviews, in WikiText's tokens), a
    # text file, or one that labkit generates (no download, labkit.data.synthetic): "synthetic"
    # (English-like), "synthetic-agreement", "synthetic-copy", "synthetic-recall"
    corpus: str = "wikitext-2"
    data_dir: str | None = None  # where to look first (else $LABKIT_DATA, the cache, download)
    tokenizer: str = "whitespace"  # whitespace | basic_english | bpe
    vocab_size: int = 8000  # BPE only
    min_freq: int = 1  # word tokenizers
    max_vocab: int | None = None  # word tokenizers: keep the most frequent N words
    train_tokens: int | None = None  # use only the first N training tokens (quick runs)
    eval_tokens: int | None = None  # evaluate on the first N valid/test tokens

    def __post_init__(self) -> None:
        if self.tokenizer not in KINDS:
            raise ValueError(f"tokenizer must be one of {', '.join(KINDS)}, got {self.tokenizer!r}")
        if not 2 <= self.vocab_size <= MAX_BPE_VOCAB:  # BPE's trainer allocates for all of them up front
            raise ValueError(f"vocab_size must be 2 to {MAX_BPE_VOCAB:,}, got {self.vocab_size:,}")
        for name in ("max_vocab", "train_tokens", "eval_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (or None: all)")


@dataclass
class LMData:
    tokenizer: Tokenizer
    train: torch.Tensor  # (N,) token ids, one <eos> per line
    valid: torch.Tensor
    test: torch.Tensor
    words_per_token: dict[str, float]  # per split: words / tokens, for word-level perplexity

    def split(self, name: str) -> torch.Tensor:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def corpus_lines(config: DataConfig, download: bool = True) -> dict[str, Iterable[str]]:
    """The raw lines of each split: lists, but WikiText-103's, which are read from disk on each pass.
    A plain-text file is split 90/5/5 by lines, IMDB's unlabelled reviews 90/5/5 by review.
    `download=False`: a named corpus that is not on disk is a DataNotFoundError."""
    if config.corpus == "wikitext-2":
        return {s: wikitext2_lines(s, config.data_dir, download=download) for s in SPLITS}
    if config.corpus == "wikitext-103":
        return {s: wikitext103_lines(s, config.data_dir, download=download) for s in SPLITS}
    if config.corpus == "imdb":
        reviews = imdb("unsup", config.data_dir, download=download)
        return split_90_5_5([review_to_wikitext(review) for review, _ in reviews], "reviews")
    if config.corpus in SYNTHETIC_CORPORA:
        return SYNTHETIC_CORPORA[config.corpus]()
    path = Path(config.corpus).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"corpus {config.corpus!r} is neither one of {', '.join(NAMED)}, a text file nor one "
                                f"of {', '.join(SYNTHETIC_CORPORA)}")
    size = path.stat().st_size
    if size > MAX_CORPUS_BYTES:
        raise LabkitError(f"{path} is {size / 2**30:,.1f} GiB: labkit reads a corpus file whole, at most "
                          f"{MAX_CORPUS_BYTES >> 20:,} MiB of it; train on a part (head -c 500M {path.name} > part.txt)")
    check_regular(path, "corpus")
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return split_90_5_5(lines, "lines", str(path))


def split_90_5_5(lines: list[str], unit: str, where: str = "the corpus") -> dict[str, list[str]]:
    if len(lines) < 20:
        raise LabkitError(f"{where} has {len(lines)} {unit}; a corpus needs at least 20 "
                          "(90% train, 5% valid, 5% test)")
    a, b = int(len(lines) * 0.9), int(len(lines) * 0.95)
    return {"train": lines[:a], "valid": lines[a:b], "test": lines[b:]}


def make_tokenizer(config: DataConfig, train_lines: Iterable[str]) -> Tokenizer:
    if config.tokenizer == "bpe":
        return build_tokenizer("bpe", train_lines, vocab_size=config.vocab_size)
    return build_tokenizer(config.tokenizer, train_lines, specials=("<unk>", "<eos>"),
                           min_freq=config.min_freq, max_size=config.max_vocab)


def load_lm_data(config: DataConfig, tokenizer: Tokenizer | None = None) -> LMData:
    """Read the corpus, build (or reuse) the tokenizer on train, and encode every split."""
    lines = corpus_lines(config)
    if tokenizer is None:
        tokenizer = make_tokenizer(config, lines["train"])
    streams: dict[str, torch.Tensor] = {}
    ratio: dict[str, float] = {}
    for split in SPLITS:
        stream, words = encode_stream(tokenizer, lines[split])
        ratio[split] = words / max(1, stream.numel())
        limit = config.train_tokens if split == "train" else config.eval_tokens
        streams[split] = stream[:limit] if limit else stream
    return LMData(tokenizer, streams["train"], streams["valid"], streams["test"], ratio)


def encode_stream(tokenizer: Tokenizer, lines: Iterable[str]) -> tuple[torch.Tensor, int]:
    """`tokenizer.encode_lines(lines)` and `count_words(lines)` in one pass, CHUNK_LINES lines at a
    time, the ids kept as int32 until the end: WikiText-103's train split (103M tokens) is 0.8 GB as
    the final int64 stream, where one Python list of its ids would be several."""
    parts, words, it = [], 0, iter(lines)
    while chunk := list(islice(it, CHUNK_LINES)):
        parts.append(tokenizer.encode_lines(chunk).to(torch.int32))
        words += count_words(chunk)
    stream = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int32)
    parts.clear()  # gone before the int64 copy is made
    return stream.long(), words
