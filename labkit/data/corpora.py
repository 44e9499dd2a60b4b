"""Find, download and verify the corpora (WikiText-2, WikiText-103, SST-2, IMDB); replaces
torchtext.datasets.

A file is looked up, in order, in: an explicit directory, ``$LABKIT_DATA/<dataset>/``, the
user cache (``cache_dir()/<dataset>/``); if it is in none, it is made in the cache: from the
dataset's archive when one lies in those folders, else downloaded (labkit.data.downloads:
resumable, with a progress bar). ``$LABKIT_DATA`` may be read-only, so labkit never writes there.
Every file or archive has a pinned size and sha256 where one is published: local files get a
cheap size check (``verify=True`` hashes them too); downloads are always hashed and only renamed
into place when the hash matches. The files unpacked from an archive with a pinned checksum
(WikiText-103, IMDB) have none of their own: the archive's vouches for them.

Environment: ``LABKIT_DATA`` (a directory of ``<dataset>/<file>``), ``LABKIT_CACHE`` (the
cache directory), ``LABKIT_DATA_MIRROR`` (a base URL serving ``<dataset>/<file>``, or
``<dataset>/<archive>`` for a dataset that comes as one: ``sst2/SST-2.zip``), ``LABKIT_OFFLINE=1``
(never download).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from labkit.data import imdb as imdb_files
from labkit.data.archives import extract_zip
from labkit.data.downloads import download_file, locked, sha256_file
from labkit.errors import ChecksumError, DataNotFoundError, LabkitError


@dataclass(frozen=True)
class FileSpec:
    """One corpus file: its pinned sha256 and size in bytes."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Dataset:
    """A corpus: its files and where they can be downloaded from.

    ``base_url`` is None when no live download is known. With ``archive`` set, the files come out
    of ``<base_url><archive>``: with ``unpack="zip"`` each is the member ``<archive_dir>/<member>``
    (``members`` maps a file to its member; by default the same name), with ``unpack="imdb"``
    labkit.data.imdb packs them. ``archive_spec`` pins the archive itself; a file's spec is None
    when only the archive's checksum is published.
    """

    files: dict[str, FileSpec | None]
    base_url: str | None
    archive: str | None = None
    archive_dir: str = ""
    archive_spec: FileSpec | None = None
    members: dict[str, str] | None = None
    unpack: str = "zip"
    citation: str = ""
    license: str = ""
    notes: str = ""

    def url(self, filename: str) -> str | None:
        if self.base_url is None:
            return None
        return self.base_url + (self.archive or filename)


MERITY = "Merity et al., Pointer Sentinel Mixture Models, 2016 (arXiv:1609.07843)"
DATASETS: dict[str, Dataset] = {
    "wikitext-2": Dataset(
        files={
            "train.txt": FileSpec("9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f", 10_797_148),
            "valid.txt": FileSpec("f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8", 1_121_681),
            "test.txt": FileSpec("d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0", 1_256_449),
        },
        base_url="https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/",
        citation=MERITY,
        license="CC BY-SA 3.0",
        notes="WikiText-2 v1, tokenized with <unk>; the pytorch/examples copy.",
    ),
    "wikitext-2-raw": Dataset(
        files={
            "wiki.test.raw": FileSpec("173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08", 1_290_590),
        },
        base_url=None,
        citation=MERITY,
        license="CC BY-SA 3.0",
        notes="WikiText-2 raw v1, test split only; no known live download.",
    ),
    "sst2": Dataset(
        files={
            "train.tsv": FileSpec("48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1", 3_806_081),
            "dev.tsv": FileSpec("54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0", 94_931),
            "test.tsv": FileSpec("69a938605609b3e6663b4487918fe1565eb293734e6e520d0366d1d412fd2a13", 197_335),
        },
        base_url="https://dl.fbaipublicfiles.com/glue/data/",
        archive="SST-2.zip",
        archive_dir="SST-2",
        citation="Socher et al., EMNLP 2013; Wang et al., GLUE, 2018",
        license="research use (no explicit license)",
        notes="GLUE SST-2; test is unlabeled.",
    ),
    "wikitext-103": Dataset(
        files=dict.fromkeys(("train.txt", "valid.txt", "test.txt")),
        # Smerity's re-hosting of the first home, s3.amazonaws.com/research.metamind.io/wikitext/ (403 now).
        base_url="https://wikitext.smerity.com/",
        archive="wikitext-103-v1.zip",
        archive_dir="wikitext-103",
        # huggingface/datasets, datasets/wikitext/dataset_infos.json (commit 040102f1),
        # "download_checksums" of wikitext-103-v1.zip at its s3 home: 190229076 bytes and this sha256,
        # which projects downloading it from wikitext.smerity.com pin too.
        archive_spec=FileSpec("242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590", 190_229_076),
        members={"train.txt": "wiki.train.tokens", "valid.txt": "wiki.valid.tokens", "test.txt": "wiki.test.tokens"},
        citation=MERITY,
        license="CC BY-SA 3.0",
        notes="WikiText-103 v1, tokenized with <unk> (vocabulary 267,735); valid and test are WikiText-2's "
              "articles. The zip's wiki.{train,valid,test}.tokens, named as WikiText-2's files.",
    ),
    "imdb": Dataset(
        files=dict.fromkeys(imdb_files.FILES.values()),
        base_url="https://ai.stanford.edu/~amaas/data/sentiment/",
        archive="aclImdb_v1.tar.gz",
        # tensorflow/datasets, tensorflow_datasets/url_checksums/imdb_reviews.txt (commit 333639b3), and
        # huggingface/datasets, datasets/imdb/dataset_infos.json (commit 040102f1): 84125825 bytes, this sha256.
        archive_spec=FileSpec("c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe", 84_125_825),
        unpack="imdb",
        citation="Maas et al., Learning Word Vectors for Sentiment Analysis, ACL 2011 (P11-1015)",
        license="research use (no explicit license); cite Maas et al. 2011",
        notes="Large Movie Review Dataset v1: 25,000 train and 25,000 test reviews (half positive), 50,000 "
              "unlabelled; packed by labkit.data.imdb into train.tsv, test.tsv, unsup.txt.",
    ),
}


def cache_dir() -> Path:
    """The user cache: ``$LABKIT_CACHE``, else ``$XDG_CACHE_HOME/labkit``, else ``~/.cache/labkit``."""
    if os.environ.get("LABKIT_CACHE"):
        return Path(os.environ["LABKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "labkit"


def _offline() -> bool:
    return os.environ.get("LABKIT_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _check_local(path: Path, spec: FileSpec | None, verify: bool) -> Path:
    if spec is None:  # unpacked from an archive whose checksum was checked
        return path
    size = path.stat().st_size
    if size != spec.size:
        raise ChecksumError(f"{path} has {size:,} bytes, expected {spec.size:,}: replace or delete it")
    if verify and (got := sha256_file(path).hexdigest()) != spec.sha256:
        raise ChecksumError(f"{path} has sha256 {got}, expected {spec.sha256}: replace or delete it")
    return path


def _spec(dataset: str, filename: str) -> tuple[Dataset, FileSpec | None]:
    if dataset not in DATASETS:
        raise LabkitError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    ds = DATASETS[dataset]
    if filename not in ds.files:
        raise LabkitError(f"{dataset} has no file {filename!r}; its files: {', '.join(ds.files)}")
    return ds, ds.files[filename]


def _folders(dataset: str, data_dir: str | Path | None) -> list[Path]:
    """Where a dataset's files are looked for, in order; the cache (where labkit writes) last."""
    folders = [Path(data_dir), Path(data_dir) / dataset] if data_dir is not None else []
    if os.environ.get("LABKIT_DATA"):
        folders.append(Path(os.environ["LABKIT_DATA"]) / dataset)
    return [*folders, cache_dir() / dataset]


def _first(folders: list[Path], name: str) -> Path | None:
    return next((folder / name for folder in folders if (folder / name).is_file()), None)


def _unpack(ds: Dataset, archive: Path, folder: Path) -> None:
    """Make the dataset's files in `folder` from its archive (verified already)."""
    if ds.unpack == "imdb":
        imdb_files.pack(archive, folder)
        return
    members = {name: ds.archive_dir + "/" * bool(ds.archive_dir) + (ds.members or {}).get(name, name)
               for name in ds.files}
    extract_zip(archive, members, folder, {n: (s.sha256, s.size) for n, s in ds.files.items() if s is not None})


def locate(
    dataset: str,
    filename: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    verify: bool = False,
    mirror: str | None = None,
) -> Path:
    """Return the path of ``<dataset>/<filename>``, making it in the cache if needed: from the
    dataset's archive when one is found where its files are looked for, else downloaded.

    ``data_dir`` may hold the file itself (one with a pin of its own), its archive, or a
    ``<dataset>/`` folder. ``mirror`` (or
    ``$LABKIT_DATA_MIRROR``) is a base URL that serves ``<dataset>/<file>`` (or ``<archive>``)
    instead of the canonical source.
    """
    ds, spec = _spec(dataset, filename)
    folders = _folders(dataset, data_dir)
    cached = folders[-1] / filename
    # `data_dir` itself may hold a file only when its pin tells it from another dataset's of the same
    # name (WikiText-2's train.txt is not WikiText-103's, whose files are pinned by their archive alone)
    own = folders if spec is not None or data_dir is None else folders[1:]
    if (path := _first(own, filename)) is not None:
        return _check_local(path, spec, verify)
    archive = _first(folders, ds.archive) if ds.archive else None

    fetch = ds.archive_spec if ds.archive else spec  # what a download is checked against (SST-2's zip: nothing)
    pinned = ds.archive_spec or spec
    data_env = os.environ.get("LABKIT_DATA")
    where = f"$LABKIT_DATA/{dataset}/ ({data_env}/{dataset}/)" if data_env else f"$LABKIT_DATA/{dataset}/"
    what = f"{ds.archive} (sha256 {pinned.sha256}) or its files ({', '.join(ds.files)})" if ds.archive_spec else \
        f"{filename} (sha256 {pinned.sha256})" if pinned else filename
    put_it = f"put {what} in {where} or in {cached.parent}/"
    mirror = mirror or os.environ.get("LABKIT_DATA_MIRROR")
    url = f"{mirror.rstrip('/')}/{dataset}/{ds.archive or filename}" if mirror else ds.url(filename)
    if archive is None:
        if url is None:
            raise DataNotFoundError(f"{dataset}/{filename} not found and has no known download: {put_it}")
        if not download or _offline():
            why = "LABKIT_OFFLINE is set" if _offline() else "download=False"
            size = f" ({fetch.size / 1e6:,.0f} MB)" if fetch and fetch.size >= 10**6 else ""
            raise DataNotFoundError(f"{dataset}/{filename} not found and downloads are off ({why}): {put_it}; "
                                    f"or allow downloads: labkit fetches it{size} from {url}")
    with locked(cached.parent / ".unpack.lock") as waited:  # one process at a time makes the files
        if waited and cached.is_file():
            return cached
        if archive is not None:
            _unpack(ds, _check_local(archive, ds.archive_spec, verify=True), cached.parent)
            return cached
        fetched = cached.parent / (ds.archive or filename)
        try:
            download_file(url, fetched, fetch and fetch.sha256, size=fetch and fetch.size)
        except DataNotFoundError as e:
            raise DataNotFoundError(f"{e}; check your connection, or {put_it}") from e
        if ds.archive:
            try:
                _unpack(ds, fetched, cached.parent)
            finally:
                fetched.unlink(missing_ok=True)  # the files are what labkit reads: the archive's disk is freed
    return cached


_WIKITEXT_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
_WIKITEXT_RAW_FILES = {"test": "wiki.test.raw"}
_SST2_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


class TextLines:
    """The lines of a text file without their newlines, read from disk again on each pass: a corpus
    too big to hold as a list of strings (WikiText-103's train split is 540 MB). Lines end at "\n"
    alone, as in `wikitext2_lines`."""

    def __init__(self, path: Path):
        self.path = path

    def __iter__(self):
        with open(self.path, encoding="utf-8", newline="\n") as f:
            for line in f:
                yield line[:-1] if line.endswith("\n") else line

    def __repr__(self) -> str:
        return f"TextLines({str(self.path)!r})"


def _split_file(split: str, files: dict[str, str], what: str) -> str:
    if split not in files:
        raise LabkitError(f"unknown {what} split {split!r}; valid splits: {', '.join(files)}")
    return files[split]


def wikitext2_lines(split: str, data_dir: str | Path | None = None, *, raw: bool = False, **kw) -> list[str]:
    """The lines of a WikiText-2 split, exactly as in the file, without the newline.

    ``raw=True`` reads the untokenized variant (test split only). ``kw`` goes to ``locate``.
    """
    files = _WIKITEXT_RAW_FILES if raw else _WIKITEXT_FILES
    dataset = "wikitext-2-raw" if raw else "wikitext-2"
    path = locate(dataset, _split_file(split, files, dataset), data_dir, **kw)
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    # split("\n"), not splitlines(): Wikipedia text holds characters splitlines() breaks on.
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def wikitext103_lines(split: str, data_dir: str | Path | None = None, **kw) -> TextLines:
    """The lines of a WikiText-103 split (the zip's ``wiki.<split>.tokens``), read lazily, each as in
    the file without the newline. ``kw`` goes to ``locate``."""
    return TextLines(locate("wikitext-103", _split_file(split, _WIKITEXT_FILES, "wikitext-103"), data_dir, **kw))


def imdb(split: str, data_dir: str | Path | None = None, **kw) -> list[tuple[str, int]]:
    """(review, label) pairs of an IMDB split: "train" or "test" (25,000 each; label 0 negative,
    1 positive) or "unsup" (50,000 unlabelled reviews, label -1). The review's raw text, on one
    line (labkit.data.imdb). ``kw`` goes to ``locate``."""
    path = locate("imdb", _split_file(split, imdb_files.FILES, "imdb"), data_dir, **kw)
    if split == "unsup":
        return [(review, -1) for review in imdb_files.unlabelled(path)]
    return imdb_files.labelled(path)


def sst2(split: str, data_dir: str | Path | None = None, **kw) -> list[tuple[str, int]]:
    """(sentence, label) pairs of an SST-2 split; label 0 negative, 1 positive, -1 for the
    unlabeled test split. ``kw`` goes to ``locate``."""
    path = locate("sst2", _split_file(split, _SST2_FILES, "sst2"), data_dir, **kw)
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows, None)  # header: "sentence label", or "index sentence" for test
        for line, row in enumerate(rows, start=2):
            if len(row) != 2 or (split != "test" and row[1] not in ("0", "1")):
                raise LabkitError(f"{path}, line {line}: not a sentence and a label of 0 or 1 ({str(row)[:60]}): the "
                                "file is damaged; delete it and labkit downloads it again")
            out.append((row[1], -1) if split == "test" else (row[0].rstrip(), int(row[1])))
    return out
