"""Bring SST-2's text conventions to WikiText-2's, so a WikiText vocabulary covers it; and raw
reviews (IMDB's) to SST-2's first (`review_to_sst`).

SST-2 is lowercased and PTB-tokenized; WikiText-2 is cased and tokenized differently. Measured
on the raw text, 11.9% of SST-2 train tokens are not in the WikiText-2 vocabulary; most of the
gap is convention, not vocabulary:

    SST-2                     WikiText-2
    does n't, ca n't          doesn 't, can 't        (split before the apostrophe)
    `` quoted ''              " quoted "
    ` quoted '                ' quoted '
    heavy-handed, 1,000, 2.5  heavy @-@ handed, 1 @,@ 000, 2 @.@ 5
    -lrb- -rrb-               ( )
    lowercase                 cased: "paris" is looked up as "Paris" when only that exists
"""

from __future__ import annotations

import html
import re

from labkit.data.vocab import Vocab

_NT = re.compile(r"(\S+) n't\b")
_SPLIT_MARKS = re.compile(r"(?<=\w)([-,.])(?=\w)")
_MARK = {"-": "@-@", ",": "@,@", ".": "@.@"}
_BRACKETS = {"-lrb-": "(", "-rrb-": ")", "-lsb-": "[", "-rsb-": "]", "-lcb-": "{", "-rcb-": "}"}


def sst_to_wikitext(sentence: str) -> str:
    """Rewrite one SST-2 sentence in WikiText-2's tokenization (case is handled by `CaseMapper`)."""
    text = _NT.sub(r"\1n 't", sentence)
    text = text.replace("``", '"').replace("''", '"')
    text = " ".join("'" if word == "`" else word for word in text.split())  # SST's opening single quote
    words = []
    for word in text.split():
        word = _BRACKETS.get(word, word)
        word = _SPLIT_MARKS.sub(lambda m: f" {_MARK[m.group(1)]} ", word)
        words.append(word)
    return " ".join(words)


# A review's raw text in SST-2's (PTB) tokens: "don't" -> do n't, "it's" -> it 's, punctuation apart;
# a hyphenated word and a number stay whole here, for `sst_to_wikitext` to mark (@-@, @,@, @.@).
_REVIEW_TOKEN = re.compile(r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|m|ll|d)\b|\d+(?:[.,]\d+)+|\w+(?:-\w+)*|\.{2,}|-{2,}|[^\w\s]",
                           re.IGNORECASE)
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def review_to_sst(text: str) -> str:
    """Rewrite a raw review (IMDB's: cased, HTML line breaks, untokenized) in SST-2's tokens, so
    that `sst_to_wikitext` and `CaseMapper` then bring it to WikiText's, as they bring SST-2."""
    text = html.unescape(_HTML_BREAK.sub(" ", text))
    return " ".join(_REVIEW_TOKEN.findall(text))


def review_to_wikitext(text: str) -> str:
    """A raw review in WikiText's tokenization (its case kept)."""
    return sst_to_wikitext(review_to_sst(text))


class CaseMapper:
    """Map a lowercased word to the vocabulary's most frequent casing of it.

    Vocabularies list words by descending frequency, so the first casing met wins:
    "the" stays "the" while "paris" becomes "Paris".
    """

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self.best: dict[str, str] = {}
        for word in vocab.itos:
            self.best.setdefault(word.lower(), word)

    def __call__(self, word: str) -> str:
        if word in self.vocab:
            return word
        return self.best.get(word.lower(), word)

    def sentence(self, text: str) -> str:
        return " ".join(self(w) for w in text.split())
