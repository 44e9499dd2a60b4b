"""IMDB movie reviews (Maas et al. 2011, ``aclImdb_v1.tar.gz``): the archive's 100,000 review
files packed into three text files, one review per line, and read back.

The archive holds ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`` (12,500 reviews each),
``aclImdb/train/unsup/<id>_0.txt`` (50,000 unlabelled reviews) and files labkit does not read
(vocabularies, bag-of-words features, URLs). `pack` reads it once, as a stream, and writes:

    train.tsv, test.tsv   "<label>\\t<review>" a line: label 1 for a positive review (pos), 0 negative
    unsup.txt             a review a line

in archive order. A review's tabs and line breaks become spaces (its paragraphs are ``<br />``
already): 100,000 small files become three, read as fast as any text file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from labkit.data.archives import Staging, tar_files
from labkit.errors import DataNotFoundError, LabkitError

FILES = {"train": "train.tsv", "test": "test.tsv", "unsup": "unsup.txt"}
LABELS = {"neg": 0, "pos": 1}
_REVIEW = re.compile(r"(?:\./)?aclImdb/(train|test)/(pos|neg|unsup)/\d+_\d+\.txt")
_BREAKS = re.compile(r"[\t\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")  # what str.splitlines() would break on, and tabs


def one_line(raw: bytes) -> str:
    """A review file's text on one line: UTF-8 (a bad byte becomes U+FFFD), breaks and tabs as spaces."""
    return _BREAKS.sub(" ", raw.decode("utf-8", errors="replace")).strip()


def pack(archive: Path, folder: Path) -> dict[str, int]:
    """Pack the reviews of `archive` into `folder`'s FILES (all or none); the count in each."""
    counts = dict.fromkeys(FILES, 0)
    with Staging(folder) as staging:
        out = {split: staging.new(name) for split, name in FILES.items()}
        try:
            for name, f in tar_files(archive):
                match = _REVIEW.fullmatch(name)
                if match is None:
                    continue
                split, kind = match.groups()
                if kind == "unsup":
                    if split != "train":
                        continue
                    split, line = "unsup", one_line(f.read())
                else:
                    line = f"{LABELS[kind]}\t{one_line(f.read())}"
                out[split].write(line.encode("utf-8") + b"\n")
                counts[split] += 1
        finally:
            for f in out.values():
                f.close()
        if not counts["train"] or not counts["test"]:
            raise DataNotFoundError(f"{archive.name} holds no aclImdb/train and aclImdb/test reviews: it is not the "
                                    "IMDB archive; delete it and try again")
        staging.commit()
    return counts


def labelled(path: Path) -> list[tuple[str, int]]:
    """(review, label) of a packed train.tsv or test.tsv."""
    rows = []
    with open(path, encoding="utf-8", newline="\n") as f:
        for number, line in enumerate(f, start=1):
            label, tab, review = line.rstrip("\n").partition("\t")
            if not tab or label not in ("0", "1"):
                raise LabkitError(f"{path}, line {number}: not a label of 0 or 1 and a review: the file is damaged; "
                                  "delete it and labkit makes it again")
            rows.append((review, int(label)))
    return rows


def unlabelled(path: Path) -> Iterator[str]:
    """The reviews of a packed unsup.txt, one at a time."""
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            yield line.rstrip("\n")
