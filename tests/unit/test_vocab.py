"""Unit tests for labkit.data.vocab (tiny inputs, no data files)."""

from __future__ import annotations

import json

import pytest

from labkit.data.vocab import UnknownTokenError, Vocab, build_vocab
from labkit.errors import LabkitError

CORPUS = [["b", "a", "c"], ["a", "b", "d"], ["a", "e", "d"]]  # a:3, b:2, d:2, c:1, e:1


def test_build_vocab_orders_specials_then_frequency_then_first_appearance():
    v = build_vocab(CORPUS)
    assert v.itos == ["<unk>", "<pad>", "<sos>", "<eos>", "a", "b", "d", "c", "e"]
    assert (v.unk_index, v.pad_index, v.sos_index, v.eos_index) == (0, 1, 2, 3)
    assert v.stoi["a"] == 4 and len(v) == 9


def test_build_vocab_is_deterministic_and_respects_special_order():
    v1 = build_vocab(CORPUS, specials=("<eos>", "<unk>"))
    v2 = build_vocab(iter(CORPUS), specials=("<eos>", "<unk>"))
    assert v1 == v2
    assert v1.itos[:2] == ["<eos>", "<unk>"]
    assert (v1.eos_index, v1.unk_index, v1.pad_index, v1.sos_index) == (0, 1, None, None)


def test_min_freq_and_max_size_count_only_non_specials():
    assert build_vocab(CORPUS, min_freq=2).itos[4:] == ["a", "b", "d"]
    v = build_vocab(CORPUS, max_size=2)
    assert len(v) == 4 + 2 and v.itos[4:] == ["a", "b"]
    assert len(build_vocab(CORPUS, max_size=0)) == 4


def test_specials_found_in_data_are_not_duplicated():
    v = build_vocab([["<unk>", "x", "<unk>"]], specials=("<unk>", "<eos>"))
    assert v.itos == ["<unk>", "<eos>", "x"]


def test_unknown_tokens_map_to_default():
    v = build_vocab(CORPUS)
    assert v["zzz"] == v.unk_index == 0
    assert v.lookup_indices(["a", "zzz", "e"]) == [4, 0, 8]
    assert "a" in v and "zzz" not in v


def test_no_default_raises_clear_keyerror():
    v = Vocab(["x", "y"], default=None)
    assert v.unk_index is None
    with pytest.raises(KeyError, match="not in the vocabulary"):
        v["zzz"]
    with pytest.raises(LabkitError):
        v.lookup_indices(["x", "zzz"])
    assert issubclass(UnknownTokenError, LabkitError)


def test_build_vocab_without_unk_has_no_default():
    v = build_vocab(CORPUS, specials=("<eos>",))
    assert v.unk_index is None
    with pytest.raises(KeyError):
        v["zzz"]


def test_constructor_validation():
    with pytest.raises(LabkitError, match="default token"):
        Vocab(["a", "b"])  # default "<unk>" missing
    with pytest.raises(LabkitError, match="duplicate"):
        Vocab(["<unk>", "a", "a"])
    with pytest.raises(LabkitError):
        Vocab(["<unk>", 3])  # type: ignore[list-item]


def test_encode_decode_roundtrip_and_bad_ids():
    import torch

    v = build_vocab(CORPUS)
    ids = v.encode(["c", "a", "e"])
    assert v.decode(ids) == ["c", "a", "e"]
    assert v.lookup_tokens(torch.tensor(ids)) == ["c", "a", "e"]
    for bad in ([99], [-1], [1.5], ["a"]):
        with pytest.raises(LabkitError):
            v.lookup_tokens(bad)


def test_empty_and_unicode_tokens():
    v = build_vocab([[], ["日本", "😀", "\x00", "naïve"], []])
    assert v.itos[4:] == ["日本", "😀", "\x00", "naïve"]
    assert build_vocab([]).itos == ["<unk>", "<pad>", "<sos>", "<eos>"]


def test_dict_and_file_roundtrip(tmp_path):
    v = build_vocab(CORPUS + [["日本", "\ud800"]])  # a lone surrogate still saves
    assert Vocab.from_dict(v.to_dict()) == v
    path = tmp_path / "sub" / "vocab.json"
    v.save(path)
    assert Vocab.load(path) == v
    assert json.loads(path.read_text())["format_version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]  # no temp file left over
    nodefault = Vocab(["x"], default=None)
    nodefault.save(path)
    assert Vocab.load(path) == nodefault


@pytest.mark.parametrize(
    "content",
    ["{not json", "[1, 2]", '{"itos": "abc"}', '{"itos": ["a", "a"], "default": null}',
     '{"itos": ["a"], "default": 3}', '{"itos": ["a"], "default": "<unk>"}',
     '{"itos": ["a"], "default": null, "format_version": 99}'],
)
def test_load_rejects_bad_files_with_one_line_message(tmp_path, content):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(LabkitError) as err:
        Vocab.load(path)
    assert "\n" not in str(err.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(LabkitError, match="not found"):
        Vocab.load(tmp_path / "nope.json")
