"""The text an analysis reads, made safe and cut to fit: encoded, never empty, within the
model's context (a notice says what was cut), and in batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

from labkit.errors import LabkitError


class EmptyInput(LabkitError):
    """There is nothing to run: the text holds no tokens."""


def clean_text(text: Any) -> str:
    """Text that every later step can encode: lone surrogates and NULs become U+FFFD."""
    if not isinstance(text, str):
        return ""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def context_length(model: nn.Module) -> int | None:
    """A Transformer's context length; None for an RNN (it reads any length)."""
    return getattr(getattr(model, "config", None), "context_length", None)


def check_fits(model: nn.Module, n_tokens: int) -> None:
    limit = context_length(model)
    if limit is not None and n_tokens > limit:
        raise LabkitError(f"{n_tokens} tokens do not fit the model's context of {limit}; use shorter inputs")


def encode_text(model: nn.Module, tokenizer: Any, text: str, max_tokens: int | None = None,
                why: str = "") -> tuple[list[int], int, list[str]]:
    """(ids, total, notices): `text`'s ids, cut to `max_tokens` (for `why`) and to the model's
    context; `total` counts them before the cut and a notice says so. Raises `EmptyInput`."""
    ids = list(tokenizer.encode(clean_text(text)))
    if not ids:
        raise EmptyInput("the text has no tokens: type a sentence")
    total = len(ids)
    context = context_length(model)
    limit = max(1, min(max_tokens or total, context or total))
    notices = []
    if total > limit:
        reason = "the model's context length" if limit == context else why
        notices.append(f"The input has {total:,} tokens; showing the first {limit} ({reason}).")
    return ids[:limit], total, notices


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
