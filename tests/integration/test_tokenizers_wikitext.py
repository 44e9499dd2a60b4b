"""Tokenizers on the real WikiText-2 files: the published counts, BPE round trips on raw text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labkit.data.tokenizers import WordTokenizer, build_tokenizer, count_words


@pytest.fixture(scope="module")
def data_dir() -> Path:
    value = os.environ.get("LABKIT_DATA")
    if not value or not Path(value).is_dir():
        pytest.skip("LABKIT_DATA is not set to the data directory")
    return Path(value)


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.readlines()


@pytest.mark.integration
def test_wikitext2_word_counts_match_published_numbers(data_dir):
    splits = {s: _read_lines(data_dir / "wikitext-2" / f"{s}.txt")
              for s in ("train", "valid", "test")}
    tok = WordTokenizer.train(splits["train"], split="whitespace", specials=("<unk>", "<eos>"))
    assert tok.vocab_size == 33_278
    streams = {s: tok.encode_lines(lines) for s, lines in splits.items()}
    assert {s: t.numel() for s, t in streams.items()} == {
        "train": 2_088_628, "valid": 217_646, "test": 245_569}
    assert int((streams["train"] == tok.unk_id).sum()) == 54_625
    assert int((streams["valid"] == tok.unk_id).sum()) == 11_718
    assert {s: count_words(lines) for s, lines in splits.items()} == {
        s: t.numel() for s, t in streams.items()}


@pytest.mark.integration
def test_bpe_on_wikitext_slice_roundtrips_raw_text(data_dir):
    train = _read_lines(data_dir / "wikitext-2" / "train.txt")[:2000]
    tok = build_tokenizer("bpe", train, vocab_size=1000)
    assert tok.vocab_size == 1000
    raw = _read_lines(data_dir / "wikitext-2-raw" / "wiki.test.raw")[:300]
    for line in raw:
        assert tok.decode(tok.encode(line)) == line
    stream = tok.encode_lines(raw)
    assert int((stream == tok.eos_id).sum()) == len(raw)
    assert stream.numel() < sum(len(line) for line in raw) / 2  # merges compress real text
