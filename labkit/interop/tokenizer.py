"""labkit tokenizers as Hugging Face tokenizers (`tokenizers` JSON that `transformers` loads) and back.

Out: a BPE tokenizer is already a `tokenizers` one. A word tokenizer becomes a WordLevel model over
the same vocabulary, with rules that split text exactly as labkit does:

- whitespace: `str.split()` splits at the control characters \\x1c-\\x1f too, the Rust side does
  not, so a normalizer turns those into spaces first; every other whitespace character agrees.
- basic_english: lowercase, then torchtext's replacements as literal `Replace` steps in the same
  order, then the whitespace split. Python and Rust lowercase alike except the Greek final sigma
  (Python looks at the context) and a few dozen letters newer than Python's Unicode tables, so the
  export is refused when the vocabulary holds any character that either side would produce there.

The word tokenizer declares no special tokens to `transformers`: it would cut `<unk>` out of a word
such as `a<unk>b`, which labkit reads as one (unknown) word. Their ids are in the model's config.

In: a `tokenizer.json` (or GPT-2's vocab.json + merges.txt) becomes a labkit BPETokenizer whose
specials come from tokenizer_config.json or the tokens present; one of labkit's own word-level
exports becomes the WordTokenizer it came from.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from labkit.atomic import MiB, read_json_file
from labkit.data.tokenizers import BPETokenizer, Tokenizer, WordTokenizer, tokenizer_from_dict
from labkit.data.vocab import Vocab
from labkit.errors import LabkitError

WHITESPACE_ONLY_IN_PYTHON = "\x1c\x1d\x1e\x1f"
BASIC_ENGLISH_REPLACEMENTS = [("'", " '  "), ('"', ""), (".", " . "), ("<br />", " "), (",", " , "), ("(", " ( "),
                              (")", " ) "), ("!", " ! "), ("?", " ? "), (";", " "), (":", " ")]


def hf_names() -> tuple[str, str]:
    """The tokenizer files of a Hugging Face folder, as `transformers` names them."""
    from transformers.tokenization_utils_base import FULL_TOKENIZER_FILE, TOKENIZER_CONFIG_FILE

    return FULL_TOKENIZER_FILE, TOKENIZER_CONFIG_FILE


def word_rules(kind: str) -> tuple[Any, Any]:
    """The normalizer and pre-tokenizer that split like labkit's word tokenizer `kind`."""
    from tokenizers import normalizers, pre_tokenizers

    steps = [normalizers.Replace(c, " ") for c in WHITESPACE_ONLY_IN_PYTHON]
    if kind == "basic_english":
        steps = [normalizers.Lowercase(), *(normalizers.Replace(a, b) for a, b in BASIC_ENGLISH_REPLACEMENTS), *steps]
    return normalizers.Sequence(steps), pre_tokenizers.WhitespaceSplit()


@functools.cache
def lowercase_disagreements() -> frozenset[str]:
    """Characters that Python's `str.lower` and the `tokenizers` Lowercase map differently, and
    what either maps them to (about 110 characters, found by trying every code point once)."""
    from tokenizers import normalizers

    chars = [chr(cp) for cp in range(1, 0x110000) if not 0xD800 <= cp < 0xE000]
    theirs = normalizers.Lowercase().normalize_str("\x00".join(chars)).split("\x00")  # one call, char by char
    found = {"σ", "ς", "Σ"}  # the final sigma: Python decides by context, Rust never does
    for c, t in zip(chars, theirs, strict=True):
        if c.lower() != t:
            found |= {c, *c.lower(), *t}
    return frozenset(found)


def hf_word_tokenizer(tokenizer: WordTokenizer) -> Any:
    """A `tokenizers.Tokenizer` whose ids equal `tokenizer`'s on any text."""
    itos = tokenizer.vocab.itos
    if tokenizer.kind == "basic_english":
        odd = sorted({c for token in itos for c in token} & lowercase_disagreements())
        if odd:
            raise LabkitError(f"cannot export this basic_english tokenizer exactly: its vocabulary holds "
                              f"{', '.join(map(repr, odd[:5]))}, which Python and Hugging Face lowercase differently")
    # WordLevel needs an unknown token; a vocabulary without a default fails on unknown words, as labkit does
    return with_rules(tokenizer.kind, {t: i for i, t in enumerate(itos)}, tokenizer.vocab.default or "<unk>")


def with_rules(kind: str, vocab: dict[str, int] | None = None, unk: str = "<unk>") -> Any:
    """A WordLevel `tokenizers.Tokenizer` over `vocab` that splits like labkit's `kind`."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    hf = HFTokenizer(models.WordLevel(vocab or {unk: 0}, unk_token=unk))
    hf.normalizer, hf.pre_tokenizer = word_rules(kind)
    return hf


def hf_tokenizer_files(tokenizer: Tokenizer, context_length: int) -> dict[str, str]:
    """The text of each tokenizer file of a Hugging Face folder, by file name."""
    tokenizer_file, config_file = hf_names()
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context_length,
                              "clean_up_tokenization_spaces": False}
    if isinstance(tokenizer, BPETokenizer):
        specials = tokenizer.specials
        text = tokenizer.to_dict()["hf_tokenizer"]
        config |= {"bos_token": specials["eos"], "eos_token": specials["eos"], "unk_token": specials["unk"],
                   "pad_token": specials["pad"] or specials["eos"]}
    elif isinstance(tokenizer, WordTokenizer):
        text = hf_word_tokenizer(tokenizer).to_str()
    else:
        raise LabkitError(f"a {tokenizer.kind} tokenizer has no Hugging Face form")
    return {tokenizer_file: text, config_file: json.dumps(config, indent=2) + "\n"}


JSON_LIMIT = 64 * MiB  # a tokenizer.json of a 50k-word vocabulary with its merges is a few MB


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a Hugging Face folder: bounded in size and depth (labkit.atomic.read_json_file)."""
    data = read_json_file(path, JSON_LIMIT, what)
    if not isinstance(data, dict):
        raise LabkitError(f"{path} is not a {what} (not a JSON object)")
    return data


def read_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a Hugging Face folder or tokenizer.json, GPT-2's vocab.json + merges.txt, or
    a labkit tokenizer file; with tokenizer_config.json beside it, its special tokens."""
    path = Path(path)
    tokenizer_file, config_file = hf_names()
    folder = path if path.is_dir() else path.parent
    extra = read_json(folder / config_file, "tokenizer config") if (folder / config_file).is_file() else {}
    if path.is_dir():
        if (path / tokenizer_file).is_file():
            path = path / tokenizer_file
        elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return wrap(gpt2_bpe(path), extra, path)
        else:
            raise LabkitError(f"{path} has no tokenizer ({tokenizer_file}, or vocab.json and merges.txt): "
                              "give one with --tokenizer PATH")
    if not path.is_file():
        raise LabkitError(f"tokenizer {path} does not exist")
    data = read_json(path, "tokenizer")
    if "kind" in data:  # a labkit tokenizer file
        return tokenizer_from_dict(data)
    from tokenizers import Tokenizer as HFTokenizer

    try:
        hf = HFTokenizer.from_str(json.dumps(data))
    except Exception as e:  # the Rust side raises plain Exception on a bad file
        raise LabkitError(f"{path} is not a Hugging Face tokenizer ({str(e).splitlines()[0][:120]})") from None
    return wrap(hf, extra, path)


def gpt2_bpe(folder: Path) -> Any:
    """GPT-2's tokenizer from its original files: byte-level BPE, no prefix space."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    try:
        hf = HFTokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    except Exception as e:
        raise LabkitError(f"{folder}: vocab.json / merges.txt are not a BPE vocabulary ({str(e)[:120]})") from None
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    eos = "<|endoftext|>"
    if hf.token_to_id(eos) is not None:
        hf.add_special_tokens([eos])  # whole, wherever it appears, as GPT-2's own tokenizer does
    return hf


def wrap(hf: Any, extra: dict[str, Any], where: Path) -> Tokenizer:
    """A `tokenizers.Tokenizer` as a labkit one: its specials from `extra` (a tokenizer_config)."""
    model = json.loads(hf.to_str())["model"].get("type")
    if model == "WordLevel":
        own = own_word_tokenizer(hf)
        if own is None:
            raise LabkitError(f"{where} is a word-level tokenizer labkit did not write; labkit reads byte-level "
                              "BPE tokenizers (GPT-2's) and its own word-level exports")
        return own
    if model != "BPE":
        raise LabkitError(f"{where} is a {model} tokenizer; labkit reads byte-level BPE ones (GPT-2's)")
    vocab = hf.get_vocab()

    def named(role: str) -> str | None:
        value = extra.get(f"{role}_token")
        value = value.get("content") if isinstance(value, dict) else value
        return value if isinstance(value, str) and value in vocab else None

    eos = named("eos") or next((t for t in ("<|endoftext|>", "<eos>") if t in vocab), None)
    if eos is None:
        raise LabkitError(f"{where} has no end-of-text token (<|endoftext|> or <eos>, or an eos_token in "
                          f"{hf_names()[1]}): labkit needs one to end lines and start texts")
    unk = named("unk") or ("<unk>" if "<unk>" in vocab else None)
    # GPT-2 trained on raw text has a newline token of its own: lines end with it, not with <|endoftext|>
    newline = "\n" if eos == "<|endoftext|>" and len(hf.encode("\n").ids) == 1 else None
    return BPETokenizer(hf, {"eos": eos, "unk": None if unk == eos else unk,
                             "pad": named("pad") or ("<pad>" if "<pad>" in vocab else None), "newline": newline})


def own_word_tokenizer(hf: Any) -> WordTokenizer | None:
    """The labkit WordTokenizer that `hf_word_tokenizer` made `hf` from, or None if it is another one."""
    data = json.loads(hf.to_str())
    vocab = data["model"].get("vocab") or {}
    itos = sorted(vocab, key=vocab.get)
    if [vocab[t] for t in itos] != list(range(len(itos))) or "<eos>" not in vocab:
        return None
    for kind in ("whitespace", "basic_english"):
        rules = json.loads(with_rules(kind).to_str())
        if (data.get("normalizer"), data.get("pre_tokenizer")) == (rules["normalizer"], rules["pre_tokenizer"]):
            unk = data["model"].get("unk_token")
            return WordTokenizer(kind, Vocab(itos, default=unk if unk in vocab else None))
    return None


def pad_vocabulary(tokenizer: Tokenizer, size: int, where: str) -> Tokenizer:
    """`tokenizer` grown to `size` ids with unused placeholder tokens, for a model whose embedding
    was padded (nanoGPT rounds GPT-2's 50,257 up to 50,304): the rows stay, so the logits do too."""
    if tokenizer.vocab_size == size:
        return tokenizer
    if tokenizer.vocab_size > size:
        raise LabkitError(f"{where}: the tokenizer has {tokenizer.vocab_size:,} tokens but the model only "
                          f"{size:,}: they do not belong together (give the right --tokenizer)")
    start = tokenizer.vocab_size
    names = [f"<|unused_{i}|>" for i in range(start, size)]
    if isinstance(tokenizer, BPETokenizer):
        from tokenizers import AddedToken
        from tokenizers import Tokenizer as HFTokenizer

        hf = HFTokenizer.from_str(tokenizer.to_dict()["hf_tokenizer"])
        hf.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in names])
        return BPETokenizer(hf, tokenizer.specials)
    if isinstance(tokenizer, WordTokenizer):
        vocab = tokenizer.vocab
        return WordTokenizer(tokenizer.kind, Vocab([*vocab.itos, *names], default=vocab.default))
    raise LabkitError(f"{where}: cannot pad a {tokenizer.kind} tokenizer to {size:,} tokens")
