"""Tests for labkit.data.tokenizers: unit tests on tiny text, integration on WikiText-2."""

from __future__ import annotations

import json

import pytest
import torch

from labkit.data.tokenizers import (
    BPETokenizer,
    WordTokenizer,
    basic_english,
    build_tokenizer,
    count_words,
    load_tokenizer,
    whitespace,
)
from labkit.errors import LabkitError

HOSTILE = [
    "", " ", "\n", "\t\r\n", "😀👍🏽", "日本語のテキスト", "\x00\x01", "naïve café", "a" * 100_000,
    "word " * 20_000, "<unk> <eos> <pad>", "İstanbul ß ǅ", "\u200b\u00a0zero-width",
]


# -- basic_english: expected outputs worked out by hand from torchtext's rules --------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("Don't stop!", ["don", "'", "t", "stop", "!"]),
        ('He said "hi".', ["he", "said", "hi", "."]),
        ("Great movie<br />Loved it.", ["great", "movie", "loved", "it", "."]),
        ("a,b;c:d(e)f?g", ["a", ",", "b", "c", "d", "(", "e", ")", "f", "?", "g"]),
        ("  multiple   spaces\t\nhere  ", ["multiple", "spaces", "here"]),
        ("3.14 well-known a/b", ["3", ".", "14", "well-known", "a/b"]),
        ("ÜNÏCÖDÉ Café STRASSE 😀!", ["ünïcödé", "café", "strasse", "😀", "!"]),
        ("", []),
        # torchtext's own test vector for basic_english normalization
        ("'\".<br />,()!?;:   Basic English Normalization for a Line of Text   '\".<br />,()!?;:",
         ["'", ".", ",", "(", ")", "!", "?", "basic", "english", "normalization", "for", "a",
          "line", "of", "text", "'", ".", ",", "(", ")", "!", "?"]),
    ],
)
def test_basic_english_matches_torchtext_rules(text, expected):
    assert basic_english(text) == expected


def test_whitespace_and_count_words():
    assert whitespace(" = Title = \n") == ["=", "Title", "="]
    # WikiText convention: whitespace words + one <eos> per line, blank lines included
    assert count_words([" a b \n", " \n", "c\n"]) == 3 + 1 + 2
    assert count_words("a b\nc") == 5  # a str is read as lines, not characters
    assert count_words([]) == 0


# -- WordTokenizer --------------------------------------------------------------------------------
LINES = [" the cat sat \n", " \n", " the dog sat on the mat \n"]


def test_word_tokenizer_train_encode_decode():
    tok = WordTokenizer.train(LINES)
    assert tok.kind == "whitespace"
    assert tok.vocab.itos[:3] == ["<unk>", "<pad>", "<eos>"]
    assert (tok.unk_id, tok.pad_id, tok.eos_id) == (0, 1, 2)
    assert tok.vocab.itos[3] == "the" and tok.vocab_size == 3 + 6
    ids = tok.encode("the cat ate the mat")
    assert tok.id_to_token(ids) == ["the", "cat", "<unk>", "the", "mat"]
    assert tok.decode(ids) == "the cat <unk> the mat"
    assert tok.decode([tok.eos_id, ids[0], tok.pad_id], skip_special=True) == "the"
    assert tok.decode([]) == "" and tok.encode("") == []


def test_word_encode_lines_appends_eos_per_line():
    tok = WordTokenizer.train(LINES)
    stream = tok.encode_lines(LINES)
    assert stream.dtype == torch.long and stream.dim() == 1
    assert stream.numel() == count_words(LINES) == 12
    expected = [i for line in LINES for i in tok.encode(line) + [tok.eos_id]]
    assert stream.tolist() == expected
    assert tok.encode_lines(LINES, add_eos=False).numel() == 9
    assert tok.encode_lines([]).shape == (0,)


def test_word_tokenizer_specials_and_pad_fallback():
    tok = WordTokenizer.train(LINES, specials=("<unk>",))  # <eos> is added when missing
    assert tok.vocab.itos[:2] == ["<unk>", "<eos>"]
    assert tok.pad_id == tok.eos_id  # no <pad>: padding is masked anyway
    tok2 = WordTokenizer.train(LINES, specials=("<eos>",))
    assert tok2.unk_id is None
    with pytest.raises(LabkitError, match="not in the vocabulary"):
        tok2.encode("unseen")


def test_basic_english_word_tokenizer():
    tok = build_tokenizer("basic_english", ["Hello, World!", "hello again."], min_freq=1)
    assert tok.kind == "basic_english"
    assert tok.id_to_token(tok.encode("HELLO world.")) == ["hello", "world", "."]


def test_word_tokenizer_hostile_input():
    tok = WordTokenizer.train(LINES)
    for text in HOSTILE:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids).split() == tok.id_to_token(ids)
    assert tok.encode("\ud800 x") == [tok.unk_id, tok.unk_id]  # lone surrogate: just unknown
    with pytest.raises(LabkitError):
        tok.encode(None)  # type: ignore[arg-type]
    for bad in ([tok.vocab_size], [-1], [0.5]):
        with pytest.raises(LabkitError):
            tok.decode(bad)


def test_word_tokenizer_save_load(tmp_path):
    tok = build_tokenizer("basic_english", ["Hello, World!", "ünïcödé 😀"])
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["kind"] == "basic_english" and data["format_version"] == 1
    loaded = load_tokenizer(path)
    assert isinstance(loaded, WordTokenizer) and loaded.kind == "basic_english"
    assert loaded.vocab == tok.vocab
    assert loaded.encode("hello ünïcödé x") == tok.encode("hello ünïcödé x")


# -- BPE ------------------------------------------------------------------------------------------
BPE_LINES = ["the quick brown fox jumps over the lazy dog", "the cat sat on the mat",
             "Ünïcödé text with émojis 😀 and <unk> markers", "numbers 1234 and 3.14"] * 20


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(BPE_LINES, vocab_size=300, min_frequency=2)


def test_bpe_basics(bpe):
    assert bpe.kind == "bpe" and 259 < bpe.vocab_size <= 300
    assert (bpe.unk_id, bpe.pad_id, bpe.eos_id) == (0, 1, 2)
    ids = bpe.encode("the cat")
    assert len(ids) < len("the cat")  # merges were learned
    assert "".join(bpe.id_to_token(ids)) == "the cat"
    assert bpe.encode("a <unk> b").count(bpe.unk_id) == 1  # specials stay whole


@pytest.mark.parametrize("text", HOSTILE + ["Unseen wörds ∑∫ and spaces  \t  end "])
def test_bpe_roundtrip_hostile(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_encode_lines_matches_encode(bpe):
    lines = ["the cat\n", "", "😀 sat\r\n"]
    stream = bpe.encode_lines(lines)
    expected = [i for line in ["the cat", "", "😀 sat"] for i in bpe.encode(line) + [bpe.eos_id]]
    assert stream.dtype == torch.long and stream.tolist() == expected
    assert bpe.encode_lines(lines, add_eos=False).numel() == len(expected) - 3


def test_bpe_errors(bpe):
    with pytest.raises(LabkitError, match="surrogate"):
        bpe.encode("\ud800")
    with pytest.raises(LabkitError):
        bpe.decode([bpe.vocab_size])
    with pytest.raises(LabkitError):
        bpe.id_to_token([-1])
    with pytest.raises(LabkitError, match="vocab_size"):
        BPETokenizer.train(BPE_LINES, vocab_size=10)


def test_bpe_save_load(bpe, tmp_path):
    path = tmp_path / "tok.json"
    bpe.save(path)
    data = json.loads(path.read_text())
    assert data["kind"] == "bpe" and isinstance(data["hf_tokenizer"], str)
    loaded = load_tokenizer(path)
    text = "the quick émoji 😀 fox"
    assert loaded.encode(text) == bpe.encode(text) and loaded.vocab_size == bpe.vocab_size
    data["hf_tokenizer"] = "{broken"
    path.write_text(json.dumps(data))
    with pytest.raises(LabkitError):
        load_tokenizer(path)


# -- factory / loading errors ---------------------------------------------------------------------
def test_build_tokenizer_unknown_kind_lists_valid_kinds():
    with pytest.raises(LabkitError, match="whitespace, basic_english, bpe"):
        build_tokenizer("spacy", ["x"])
    with pytest.raises(LabkitError):
        WordTokenizer.train(["x"], split="bpe")


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"format_version": 1}', '{"kind": "nope", "format_version": 1}',
     '{"kind": "whitespace", "format_version": 7}', '{"kind": "whitespace", "format_version": 1}',
     '{"kind": "bpe", "format_version": 1}',
     '{"kind": "whitespace", "format_version": 1, "vocab": {"itos": ["<unk>"]}}'],
)
def test_load_tokenizer_rejects_bad_files(tmp_path, content):
    path = tmp_path / "tok.json"
    path.write_text(content)
    with pytest.raises(LabkitError) as err:
        load_tokenizer(path)
    assert "\n" not in str(err.value)
    with pytest.raises(LabkitError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")


# -- integration: the real WikiText-2 files -------------------------------------------------------


