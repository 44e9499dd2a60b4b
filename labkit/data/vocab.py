"""A word vocabulary: the replacement for torchtext's `Vocab` / `build_vocab_from_iterator`.

Ids are positions in `itos`; specials come first, so `<unk>` (and friends) have small, stable
ids. Unknown tokens map to the default token's id, like torchtext's `set_default_index`.
Saved as plain JSON so a run directory never holds pickled Python objects.
"""

from __future__ import annotations

import json
import operator
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from labkit.atomic import MiB, parse_json, read_bounded, write_atomic
from labkit.errors import LabkitError

FORMAT_VERSION = 1
JSON_LIMIT = 256 * MiB  # a tokenizer may be large (a word vocabulary, BPE merges); not larger than this
DEFAULT_SPECIALS = ("<unk>", "<pad>", "<sos>", "<eos>")


class UnknownTokenError(LabkitError, KeyError):
    """A token is not in a vocabulary that has no default (unknown) token."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class Vocab:
    """Maps tokens to ids and back.

    Args:
        itos: the tokens, in id order; they must be distinct strings.
        default: the token unknown tokens map to (it must be in `itos`), or None to make an
            unknown token an error.
    """

    def __init__(self, itos: Iterable[str], default: str | None = "<unk>") -> None:
        self._itos = list(itos)
        if not all(isinstance(tok, str) for tok in self._itos):
            raise LabkitError("vocabulary tokens must all be strings")
        self._stoi = {tok: i for i, tok in enumerate(self._itos)}
        if len(self._stoi) != len(self._itos):
            dupes = sorted({t for t, c in Counter(self._itos).items() if c > 1})[:5]
            raise LabkitError(f"vocabulary has duplicate tokens: {dupes}")
        if default is not None and default not in self._stoi:
            raise LabkitError(
                f"default token {default!r} is not in the vocabulary; add it or pass default=None"
            )
        self.default = default
        self.default_index = None if default is None else self._stoi[default]

    # -- mapping ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __getitem__(self, token: str) -> int:
        idx = self._stoi.get(token, self.default_index)
        if idx is None:
            raise UnknownTokenError(
                f"token {token!r} is not in the vocabulary and it has no default token"
            )
        return idx

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self._itos, self.default) == (other._itos, other.default)

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, default={self.default!r}, head={self._itos[:6]})"

    def lookup_indices(self, tokens: Iterable[str]) -> list[int]:
        """Ids for `tokens`; unknown tokens get the default id."""
        stoi, default = self._stoi, self.default_index
        if default is not None:  # fast path: one dict lookup per token
            return [stoi.get(tok, default) for tok in tokens]
        return [self[tok] for tok in tokens]

    def lookup_tokens(self, ids: Iterable[int]) -> list[str]:
        """Tokens for `ids` (ints or a 1-D tensor)."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        n, out = len(self._itos), []
        for i in ids:
            try:
                j = operator.index(i)  # accepts numpy ints, rejects floats and strings
            except TypeError:
                j = -1
            if not 0 <= j < n:
                raise LabkitError(f"id {i!r} is not valid for a vocabulary of size {n}")
            out.append(self._itos[j])
        return out

    encode = lookup_indices
    decode = lookup_tokens

    @property
    def itos(self) -> list[str]:
        return list(self._itos)

    @property
    def stoi(self) -> dict[str, int]:
        return dict(self._stoi)

    @property
    def unk_index(self) -> int | None:
        """The id unknown tokens map to (the default token's id), or None."""
        return self.default_index

    @property
    def pad_index(self) -> int | None:
        return self._stoi.get("<pad>")

    @property
    def sos_index(self) -> int | None:
        return self._stoi.get("<sos>")

    @property
    def eos_index(self) -> int | None:
        return self._stoi.get("<eos>")

    # -- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "default": self.default, "itos": list(self._itos)}

    @classmethod
    def from_dict(cls, d: Any) -> Vocab:
        if not isinstance(d, dict) or not isinstance(d.get("itos"), list):
            raise LabkitError("not a labkit vocabulary: expected a JSON object with an 'itos' list")
        if d.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise LabkitError(f"unsupported vocabulary format_version {d.get('format_version')!r}")
        default = d.get("default")
        if default is not None and not isinstance(default, str):
            raise LabkitError("vocabulary 'default' must be a string or null")
        return cls(d["itos"], default=default)

    def save(self, path: str | os.PathLike) -> None:
        save_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        return cls.from_dict(load_json(path, "vocabulary"))


def build_vocab(
    token_lists: Iterable[Sequence[str]],
    specials: Sequence[str] = DEFAULT_SPECIALS,
    min_freq: int = 1,
    max_size: int | None = None,
    default: str | None = "<unk>",
) -> Vocab:
    """Count tokens and build a `Vocab`.

    Specials come first, in the given order; then tokens by descending frequency, ties broken
    by first appearance, so the result is deterministic. `max_size` caps the number of
    non-special tokens. `default` falls back to None when it is not among the specials.
    """
    if min_freq < 1:
        raise LabkitError(f"min_freq must be >= 1, got {min_freq}")
    if max_size is not None and max_size < 0:
        raise LabkitError(f"max_size must be >= 0 or None, got {max_size}")
    counts: Counter[str] = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    special_set = set(specials)
    # Counter keeps first-insertion order and sorted() is stable: ties stay in appearance order.
    ranked = sorted(
        (tok for tok, c in counts.items() if c >= min_freq and tok not in special_set),
        key=lambda tok: -counts[tok],
    )
    if max_size is not None:
        ranked = ranked[:max_size]
    itos = list(dict.fromkeys(specials)) + ranked
    return Vocab(itos, default=default if default in special_set else None)


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file + os.replace) so a crash never leaves half a file."""
    path = Path(path)
    text = json.dumps(obj, ensure_ascii=False, indent=1)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: fall back to \\u escapes, still valid JSON
        data = json.dumps(obj, indent=1).encode("ascii")
    write_atomic(path, data)


def load_json(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file of at most JSON_LIMIT bytes; a missing, non-regular, oversized or damaged
    file (of any shape: deep nesting too) is a `LabkitError` with a one-line message."""
    try:
        data = read_bounded(path, JSON_LIMIT, f"{what} file")
    except FileNotFoundError:
        raise LabkitError(f"{what} file not found: {path}") from None
    try:
        return parse_json(data)
    except ValueError as e:
        raise LabkitError(f"{what} file {path} is corrupt: {e}") from None
