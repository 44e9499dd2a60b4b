"""Tokenizers: text -> token ids -> text, with one interface for word-level and BPE.

Everything downstream (trainer, generation, fine-tuning, the app) talks to a `Tokenizer`:

- `encode(text)`: ids for one line or sentence, no `<eos>` appended.
- `encode_lines(lines)`: a corpus as one 1-D LongTensor stream, each line's ids then `<eos>`
  (the WikiText / word_language_model convention: `<eos>` stands for the newline).
- `decode(ids)`, `id_to_token(ids)` (token strings for attention views), `save` / `load_tokenizer`.

Kinds: "whitespace" (str.split; WikiText-2 v1 is already tokenized), "basic_english"
(torchtext's rules) and "bpe" (byte-level BPE through Hugging Face `tokenizers`).
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from labkit.data.vocab import Vocab, build_vocab, load_json, save_json
from labkit.errors import LabkitError

FORMAT_VERSION = 1
WORD_KINDS = ("whitespace", "basic_english")
KINDS = (*WORD_KINDS, "bpe")

# torchtext/data/utils.py `_patterns` / `_replacements`, applied in this order.
_BASIC_ENGLISH_RULES = [
    (re.compile(p), r)
    for p, r in [
        (r"\'", " '  "),
        (r"\"", ""),
        (r"\.", " . "),
        (r"<br \/>", " "),
        (r",", " , "),
        (r"\(", " ( "),
        (r"\)", " ) "),
        (r"\!", " ! "),
        (r"\?", " ? "),
        (r"\;", " "),
        (r"\:", " "),
        (r"\s+", " "),
    ]
]


def basic_english(text: str) -> list[str]:
    """torchtext's `get_tokenizer("basic_english")`, rule for rule.

    Lowercase, then in order: `'` -> `" '  "` (the apostrophe becomes its own token, so
    "don't" -> don ' t); `"` is deleted; `.` -> `" . "`; the HTML break `<br />` -> space;
    `,` `(` `)` `!` `?` become separate tokens; `;` and `:` become spaces (dropped);
    whitespace runs collapse; finally split on whitespace. Other punctuation (`-`, `/`, ...)
    stays attached to its word.
    """
    line = text.lower()
    for pattern, replacement in _BASIC_ENGLISH_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def whitespace(text: str) -> list[str]:
    """Split on runs of whitespace (for pre-tokenized text such as WikiText-2 v1)."""
    return text.split()


SPLITTERS: dict[str, Callable[[str], list[str]]] = {
    "whitespace": whitespace,
    "basic_english": basic_english,
}


def count_words(lines: Iterable[str]) -> int:
    """Whitespace words plus one `<eos>` per line: the WikiText count for word perplexity."""
    return sum(len(line.split()) + 1 for line in _as_lines(lines))


def _as_lines(lines: Iterable[str] | str) -> Iterable[str]:
    # A bare string would otherwise be iterated character by character.
    return lines.splitlines() if isinstance(lines, str) else lines


def _ids_list(ids: Any, vocab_size: int) -> list[int]:
    """Ids as plain ints, checked against the vocabulary size."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    out = []
    for i in ids:
        try:
            j = operator.index(i)  # accepts numpy ints, rejects floats and strings
        except TypeError:
            j = -1
        if not 0 <= j < vocab_size:  # HF would silently drop an out-of-range id
            raise LabkitError(f"id {i!r} is not valid for a vocabulary of size {vocab_size}")
        out.append(j)
    return out


class Tokenizer:
    """The interface every tokenizer implements (see the module docstring)."""

    kind: str
    vocab_size: int
    eos_id: int
    unk_id: int | None
    pad_id: int  # padding is always masked downstream, so `<eos>` is a fine stand-in

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_lines(self, lines: Iterable[str], add_eos: bool = True) -> torch.Tensor:
        """One LongTensor stream: each line's ids, then `<eos>` when `add_eos`."""
        out: list[int] = []
        for line in _as_lines(lines):
            out.extend(self.encode(line))
            if add_eos:
                out.append(self.eos_id)
        return torch.tensor(out, dtype=torch.long)

    def decode(self, ids: Any, skip_special: bool = False) -> str:
        raise NotImplementedError

    def id_to_token(self, ids: Any) -> list[str]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        save_json(path, self.to_dict())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, vocab_size={self.vocab_size})"


class WordTokenizer(Tokenizer):
    """Split text into words ("whitespace" or "basic_english"), then look them up in a `Vocab`."""

    def __init__(self, split: str, vocab: Vocab) -> None:
        if split not in SPLITTERS:
            raise LabkitError(f"unknown word split {split!r}; valid: {', '.join(WORD_KINDS)}")
        if vocab.eos_index is None:
            raise LabkitError("a word tokenizer's vocabulary needs an '<eos>' token")
        self.kind = split
        self.vocab = vocab
        self._split = SPLITTERS[split]
        self.vocab_size = len(vocab)
        self.eos_id = vocab.eos_index
        self.unk_id = vocab.unk_index
        self.pad_id = vocab.pad_index if vocab.pad_index is not None else vocab.eos_index

    @classmethod
    def train(
        cls,
        lines: Iterable[str],
        split: str = "whitespace",
        specials: Sequence[str] = ("<unk>", "<pad>", "<eos>"),
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> WordTokenizer:
        """Build the vocabulary from `lines`; `<eos>` is appended to `specials` if missing."""
        if split not in SPLITTERS:
            raise LabkitError(f"unknown word split {split!r}; valid: {', '.join(WORD_KINDS)}")
        specials = tuple(specials) + (() if "<eos>" in specials else ("<eos>",))
        splitter = SPLITTERS[split]
        vocab = build_vocab(
            (splitter(line) for line in _as_lines(lines)), specials, min_freq, max_size
        )
        return cls(split, vocab)

    def tokenize(self, text: str) -> list[str]:
        return self._split(text)

    def extended(self, words: Sequence[str]) -> WordTokenizer:
        """The same tokenizer with `words` (those it lacks) appended to its vocabulary: old ids stay."""
        new = [w for w in dict.fromkeys(words) if w not in self.vocab]
        return WordTokenizer(self.kind, Vocab([*self.vocab.itos, *new], default=self.vocab.default))

    def encode(self, text: str) -> list[int]:
        return self.vocab.lookup_indices(self._split(_valid_text(text, utf8=False)))

    def decode(self, ids: Any, skip_special: bool = False) -> str:
        tokens = self.vocab.lookup_tokens(ids)
        if skip_special:
            specials = {"<pad>", "<sos>", "<eos>"}
            tokens = [t for t in tokens if t not in specials]
        return " ".join(tokens)

    def id_to_token(self, ids: Any) -> list[str]:
        return self.vocab.lookup_tokens(ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "format_version": FORMAT_VERSION, "vocab": self.vocab.to_dict()}


BPE_SPECIALS = ("<unk>", "<pad>", "<eos>")
# Which token plays which part, as saved in the tokenizer file: eos (required; also the start of a text),
# unk and pad (None: none; pad falls back to eos) and newline, the text whose one token ends each line in
# `encode_lines` (None: eos, labkit's convention; GPT-2's own tokenizer has "\n"). A file without the
# field is one of labkit's own BPE tokenizers, with these:
LABKIT_SPECIALS: dict[str, str | None] = {"eos": "<eos>", "unk": "<unk>", "pad": "<pad>", "newline": None}


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style) through Hugging Face `tokenizers`.

    Byte-level means every string is encodable without `<unk>` and `decode(encode(s)) == s`.
    The special tokens are matched as whole tokens when they appear literally in the text
    (so WikiText's `<unk>` stays one token). `specials` says which they are (LABKIT_SPECIALS above).
    """

    kind = "bpe"

    def __init__(self, hf_tokenizer: Any, specials: dict[str, str | None] | None = None) -> None:
        self._hf = hf_tokenizer
        self.specials = dict(LABKIT_SPECIALS if specials is None else specials)
        if (set(self.specials) - set(LABKIT_SPECIALS) or not isinstance(self.specials.get("eos"), str)
                or not all(v is None or isinstance(v, str) for v in self.specials.values())):
            raise LabkitError(f"BPE tokenizer specials must name an eos token and may name "
                              f"{', '.join(LABKIT_SPECIALS)}; got {specials!r:.120}")
        roles = [r for r in ("eos", "unk", "pad") if self.specials.get(r) is not None]
        ids = {r: hf_tokenizer.token_to_id(self.specials[r]) for r in roles}
        missing = [self.specials[r] for r, i in ids.items() if i is None]
        if missing:
            raise LabkitError(f"BPE tokenizer lacks special tokens {missing}")
        self.vocab_size = hf_tokenizer.get_vocab_size()
        self.eos_id, self.unk_id, self.pad_id = ids["eos"], ids.get("unk"), ids.get("pad", ids["eos"])
        newline = self.specials.get("newline")
        self._newline_id = self.eos_id if newline is None else _one_id(hf_tokenizer, newline)

    @classmethod
    def train(
        cls, lines: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2
    ) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(BPE_SPECIALS) + len(alphabet):
            raise LabkitError(
                f"BPE vocab_size must be at least {len(BPE_SPECIALS) + len(alphabet)} "
                f"(specials + 256 bytes), got {vocab_size}"
            )
        hf = HFTokenizer(models.BPE(unk_token="<unk>"))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(BPE_SPECIALS),
            initial_alphabet=alphabet,  # all 256 bytes: nothing is ever unknown
            show_progress=False,
        )
        lines = [_valid_text(line) for line in _as_lines(lines)]
        hf.train_from_iterator(lines, trainer)
        return cls(hf)

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(_valid_text(text)).ids

    def encode_lines(self, lines: Iterable[str], add_eos: bool = True) -> torch.Tensor:
        # `<eos>` (or the newline token) stands for the line break, so a trailing newline is dropped, not encoded.
        texts = [_valid_text(line).rstrip("\r\n") for line in _as_lines(lines)]
        out: list[int] = []
        for enc in self._hf.encode_batch(texts):  # parallel, in Rust
            out.extend(enc.ids)
            if add_eos:
                out.append(self._newline_id)
        return torch.tensor(out, dtype=torch.long)

    def decode(self, ids: Any, skip_special: bool = False) -> str:
        return self._hf.decode(_ids_list(ids, self.vocab_size), skip_special_tokens=skip_special)

    def id_to_token(self, ids: Any) -> list[str]:
        # Decoding one id at a time turns byte symbols ("Ġthe") into text (" the"); a piece
        # of a multi-byte character shows as U+FFFD.
        ids = _ids_list(ids, self.vocab_size)
        return [self._hf.decode([i], skip_special_tokens=False) for i in ids]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "bpe", "format_version": FORMAT_VERSION, "hf_tokenizer": self._hf.to_str(),
                "specials": self.specials}


def _one_id(hf_tokenizer: Any, text: str) -> int:
    ids = hf_tokenizer.encode(text).ids
    if len(ids) != 1:
        raise LabkitError(f"the newline text {text!r} is {len(ids)} tokens for this tokenizer; it must be one")
    return ids[0]


def _valid_text(text: str, utf8: bool = True) -> str:
    """`text` itself, or a LabkitError for what would crash deeper down."""
    if not isinstance(text, str):
        raise LabkitError(f"expected text as str, got {type(text).__name__}")
    if utf8 and not text.isascii():  # the Rust side rejects strings that are not valid UTF-8
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise LabkitError("text is not valid unicode (it contains lone surrogates)") from None
    return text


def build_tokenizer(kind: str, lines: Iterable[str], **kwargs: Any) -> Tokenizer:
    """Train a tokenizer of `kind` on `lines` (kwargs go to the kind's `train`)."""
    if kind in WORD_KINDS:
        return WordTokenizer.train(lines, split=kind, **kwargs)
    if kind == "bpe":
        return BPETokenizer.train(lines, **kwargs)
    raise LabkitError(f"unknown tokenizer kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def tokenizer_from_dict(d: Any) -> Tokenizer:
    if not isinstance(d, dict) or "kind" not in d:
        raise LabkitError("not a labkit tokenizer: expected a JSON object with a 'kind' field")
    if d.get("format_version") != FORMAT_VERSION:
        raise LabkitError(f"unsupported tokenizer format_version {d.get('format_version')!r}")
    kind = d["kind"]
    if kind in WORD_KINDS:
        return WordTokenizer(kind, Vocab.from_dict(d.get("vocab")))
    if kind == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        if not isinstance(d.get("hf_tokenizer"), str):
            raise LabkitError("BPE tokenizer JSON lacks its 'hf_tokenizer' string")
        try:
            hf = HFTokenizer.from_str(d["hf_tokenizer"])
        except Exception as e:  # the Rust side raises plain Exception on bad JSON
            raise LabkitError(f"corrupt BPE tokenizer: {str(e).splitlines()[0]}") from None
        specials = d.get("specials")
        if specials is not None and not isinstance(specials, dict):
            raise LabkitError("BPE tokenizer JSON has a 'specials' field that is not an object")
        return BPETokenizer(hf, specials)
    raise LabkitError(f"unknown tokenizer kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer saved with `Tokenizer.save`."""
    return tokenizer_from_dict(load_json(path, "tokenizer"))
