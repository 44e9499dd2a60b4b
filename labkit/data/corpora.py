"""Find, download and verify the corpora (WikiText-2, SST-2); replaces torchtext.datasets.

A file is looked up, in order, in: an explicit directory, ``$LABKIT_DATA/<dataset>/``, the
user cache (``cache_dir()/<dataset>/``); if it is in none, it is downloaded into the cache.
``$LABKIT_DATA`` may be read-only, so labkit never writes there. Every file has a pinned
size and sha256: local files get a cheap size check (``verify=True`` hashes them too);
downloads are always hashed and only renamed into place when the hash matches.

Environment: ``LABKIT_DATA`` (a directory of ``<dataset>/<file>``), ``LABKIT_CACHE`` (the
cache directory), ``LABKIT_DATA_MIRROR`` (a base URL serving ``<dataset>/<file>``; for
sst2 ``sst2/SST-2.zip``), ``LABKIT_OFFLINE=1`` (never download).
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from labkit.errors import ChecksumError, DataNotFoundError, LabkitError

_CHUNK = 1 << 16


@dataclass(frozen=True)
class FileSpec:
    """One corpus file: its pinned sha256 and size in bytes."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Dataset:
    """A corpus: its files and where they can be downloaded from.

    ``base_url`` is None when no live download is known. With ``archive`` set, the files are
    members ``<archive_dir>/<file>`` of the zip ``<base_url><archive>`` instead of plain files.
    """

    files: dict[str, FileSpec]
    base_url: str | None
    archive: str | None = None
    archive_dir: str = ""
    citation: str = ""
    license: str = ""
    notes: str = ""

    def url(self, filename: str) -> str | None:
        if self.base_url is None:
            return None
        return self.base_url + (self.archive or filename)


DATASETS: dict[str, Dataset] = {
    "wikitext-2": Dataset(
        files={
            "train.txt": FileSpec("9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f", 10_797_148),
            "valid.txt": FileSpec("f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8", 1_121_681),
            "test.txt": FileSpec("d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0", 1_256_449),
        },
        base_url="https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/",
        citation="Merity et al., Pointer Sentinel Mixture Models, 2016 (arXiv:1609.07843)",
        license="CC BY-SA 3.0",
        notes="WikiText-2 v1, tokenized with <unk>; the pytorch/examples copy.",
    ),
    "wikitext-2-raw": Dataset(
        files={
            "wiki.test.raw": FileSpec("173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08", 1_290_590),
        },
        base_url=None,
        citation="Merity et al., Pointer Sentinel Mixture Models, 2016 (arXiv:1609.07843)",
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
}


def cache_dir() -> Path:
    """The user cache: ``$LABKIT_CACHE``, else ``$XDG_CACHE_HOME/labkit``, else ``~/.cache/labkit``."""
    if os.environ.get("LABKIT_CACHE"):
        return Path(os.environ["LABKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "labkit"


def _offline() -> bool:
    return os.environ.get("LABKIT_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_local(path: Path, spec: FileSpec, verify: bool) -> Path:
    size = path.stat().st_size
    if size != spec.size:
        raise ChecksumError(f"{path} has {size:,} bytes, expected {spec.size:,}: replace or delete it")
    if verify and (got := _sha256(path)) != spec.sha256:
        raise ChecksumError(f"{path} has sha256 {got}, expected {spec.sha256}: replace or delete it")
    return path


def _stream(url: str, out, *, timeout: float, progress: bool, desc: str) -> tuple[str, int]:
    """Copy ``url`` into the open binary file ``out``; return (sha256, bytes). Short reads fail."""
    h, n = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise DataNotFoundError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise DataNotFoundError(f"could not reach {url}: {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:  # reset, timeout, bad response
        raise DataNotFoundError(f"download of {url} broke off after {n:,} bytes: {e!r}") from e
    if total is not None and n != total:
        raise DataNotFoundError(f"download of {url} broke off: got {n:,} of {total:,} bytes; try again")
    return h.hexdigest(), n


def _temp_in(directory: Path, name: str):
    directory.mkdir(parents=True, exist_ok=True)
    return tempfile.NamedTemporaryFile(dir=directory, prefix=f".{name}.", suffix=".part", delete=False)


def download_file(
    url: str, dest: Path, sha256: str, *, size: int | None = None, progress: bool = True, timeout: float = 30
) -> Path:
    """Download ``url`` to ``dest`` through a temporary file; rename it into place only if its
    sha256 (and size, if given) match. On any failure nothing is left behind."""
    dest = Path(dest)
    tmp = _temp_in(dest.parent, dest.name)
    try:
        with tmp:
            got, n = _stream(url, tmp, timeout=timeout, progress=progress, desc=dest.name)
        if size is not None and n != size:
            raise ChecksumError(f"{dest.name} from {url} has {n:,} bytes, expected {size:,}")
        if got != sha256:
            raise ChecksumError(f"{dest.name} from {url} has sha256 {got}, expected {sha256}")
        os.replace(tmp.name, dest)
    finally:
        Path(tmp.name).unlink(missing_ok=True)
    return dest


def _download_archive(url: str, ds: Dataset, dest_dir: Path, *, timeout: float = 30) -> None:
    """Download a zip and extract all of ``ds.files`` into ``dest_dir``, each one verified;
    the files are renamed into place only when every one of them matches."""
    parts: dict[str, str] = {}
    archive = _temp_in(dest_dir, Path(url).name)
    try:
        with archive:
            _stream(url, archive, timeout=timeout, progress=True, desc=Path(url).name)
        try:
            with zipfile.ZipFile(archive.name) as zf:
                for name, spec in ds.files.items():
                    member = f"{ds.archive_dir}/{name}" if ds.archive_dir else name
                    with zf.open(member) as src, _temp_in(dest_dir, name) as out:
                        parts[name] = out.name
                        h = hashlib.sha256()
                        for chunk in iter(lambda: src.read(_CHUNK), b""):
                            out.write(chunk)
                            h.update(chunk)
                    if (got := h.hexdigest()) != spec.sha256:
                        raise ChecksumError(f"{member} in {url} has sha256 {got}, expected {spec.sha256}")
        except (zipfile.BadZipFile, KeyError) as e:
            raise DataNotFoundError(f"{url} is not the expected zip ({e}); try again or use another mirror") from e
        for name, tmp_name in parts.items():
            os.replace(tmp_name, dest_dir / name)
    finally:
        for tmp_name in [archive.name, *parts.values()]:
            Path(tmp_name).unlink(missing_ok=True)


def _spec(dataset: str, filename: str) -> tuple[Dataset, FileSpec]:
    if dataset not in DATASETS:
        raise LabkitError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    ds = DATASETS[dataset]
    if filename not in ds.files:
        raise LabkitError(f"{dataset} has no file {filename!r}; its files: {', '.join(ds.files)}")
    return ds, ds.files[filename]


def locate(
    dataset: str,
    filename: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    verify: bool = False,
    mirror: str | None = None,
) -> Path:
    """Return the path of ``<dataset>/<filename>``, downloading it into the cache if needed.

    ``data_dir`` may hold the file itself or a ``<dataset>/`` folder. ``mirror`` (or
    ``$LABKIT_DATA_MIRROR``) is a base URL that serves ``<dataset>/<file>`` instead of the
    canonical source.
    """
    ds, spec = _spec(dataset, filename)
    candidates = []
    if data_dir is not None:
        candidates += [Path(data_dir) / filename, Path(data_dir) / dataset / filename]
    if os.environ.get("LABKIT_DATA"):
        candidates.append(Path(os.environ["LABKIT_DATA"]) / dataset / filename)
    cached = cache_dir() / dataset / filename
    candidates.append(cached)
    for path in candidates:
        if path.is_file():
            return _check_local(path, spec, verify)

    data_env = os.environ.get("LABKIT_DATA")
    where = f"$LABKIT_DATA/{dataset}/ ({data_env}/{dataset}/)" if data_env else f"$LABKIT_DATA/{dataset}/"
    put_it = f"put {filename} (sha256 {spec.sha256}) in {where} or in {cached.parent}/"
    mirror = mirror or os.environ.get("LABKIT_DATA_MIRROR")
    if mirror:
        url = f"{mirror.rstrip('/')}/{dataset}/{ds.archive or filename}"
    else:
        url = ds.url(filename)
    if url is None:
        raise DataNotFoundError(f"{dataset}/{filename} not found and has no known download: {put_it}")
    if not download or _offline():
        why = "LABKIT_OFFLINE is set" if _offline() else "download=False"
        raise DataNotFoundError(f"{dataset}/{filename} not found and downloads are off ({why}): {put_it}")
    try:
        if ds.archive:
            _download_archive(url, ds, cached.parent)
        else:
            download_file(url, cached, spec.sha256, size=spec.size)
    except ChecksumError:
        raise
    except DataNotFoundError as e:
        raise DataNotFoundError(f"{e}; check your connection, or {put_it}") from e
    return cached


_WIKITEXT_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
_WIKITEXT_RAW_FILES = {"test": "wiki.test.raw"}
_SST2_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


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
