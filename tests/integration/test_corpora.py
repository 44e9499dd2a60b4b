"""labkit.data.corpora: lookup order, offline errors, and downloads from a real local HTTP server.

Unit tests use tiny files with their own checksums (a ``tiny`` dataset patched into
``DATASETS``); integration tests read the real corpora from ``$LABKIT_DATA`` and serve copies
of them over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import io
import shutil
import socket
import time
import zipfile
from pathlib import Path

import pytest
from httpserver import contents, dies_after, serve, sha, slow, status

from labkit.data import corpora
from labkit.data.corpora import Dataset, FileSpec, cache_dir, locate, sst2, wikitext2_lines
from labkit.data.downloads import download_file
from labkit.errors import ChecksumError, DataNotFoundError, LabkitError


@pytest.fixture
def server():
    with serve() as srv:
        yield srv


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch) -> Path:
    """A fresh cache; no data dir, mirror or offline flag from the caller's environment."""
    for var in ("LABKIT_DATA", "LABKIT_DATA_MIRROR", "LABKIT_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


TINY = b"hello labkit\n"


@pytest.fixture
def tiny(monkeypatch) -> bytes:
    """A dataset ``tiny`` with one file ``a.txt`` holding TINY, with no canonical source."""
    monkeypatch.setitem(corpora.DATASETS, "tiny", Dataset(files={"a.txt": FileSpec(sha(TINY), len(TINY))}, base_url=None))
    return TINY


# --- unit tests: no data -----------------------------------------------------------------------


def test_cache_dir_env_order(monkeypatch, tmp_path):
    monkeypatch.delenv("LABKIT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "labkit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "labkit"
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_datasets_table_is_complete():
    assert set(corpora.DATASETS) == {"wikitext-2", "wikitext-2-raw", "sst2", "wikitext-103", "imdb"}
    for ds in corpora.DATASETS.values():
        for spec in [*ds.files.values(), ds.archive_spec]:
            assert spec is None or (len(spec.sha256) == 64 and spec.size > 0)
        # a file is pinned itself, or by the archive it comes out of
        assert ds.archive_spec is not None or all(spec is not None for spec in ds.files.values())
    assert corpora.DATASETS["wikitext-2"].url("valid.txt").endswith("/word_language_model/data/wikitext-2/valid.txt")
    assert corpora.DATASETS["sst2"].url("dev.tsv") == "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
    assert corpora.DATASETS["wikitext-2-raw"].url("wiki.test.raw") is None
    assert corpora.DATASETS["wikitext-103"].url("train.txt") == "https://wikitext.smerity.com/wikitext-103-v1.zip"
    assert corpora.DATASETS["imdb"].url("unsup.txt") == "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
    assert corpora.DATASETS["imdb"].archive_spec.size == 84_125_825


def test_download_file_ok(server, tmp_path):
    server.routes["/a.txt"] = TINY
    dest = download_file(f"{server.url}/a.txt", tmp_path / "d" / "a.txt", sha(TINY), size=len(TINY), progress=False)
    assert dest.read_bytes() == TINY
    assert contents(tmp_path / "d") == ["a.txt"]


def test_download_file_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.routes["/a.txt"] = b"HELLO labkit\n"
    with pytest.raises(ChecksumError) as err:
        download_file(f"{server.url}/a.txt", tmp_path / "d" / "a.txt", sha(TINY), progress=False)
    msg = str(err.value)
    assert "a.txt" in msg and sha(TINY) in msg and sha(b"HELLO labkit\n") in msg
    assert contents(tmp_path / "d") == []


def test_download_file_size_mismatch(server, tmp_path):
    server.routes["/a.txt"] = TINY
    with pytest.raises(ChecksumError, match="bytes"):
        download_file(f"{server.url}/a.txt", tmp_path / "a.txt", sha(TINY), size=len(TINY) + 1, progress=False)
    assert not (tmp_path / "a.txt").exists() and not list(tmp_path.glob(".*part"))


def test_download_file_server_dies_mid_transfer(server, tmp_path):
    data = bytes(range(256)) * 400
    server.routes["/big.bin"] = dies_after(data, 30_000)
    with pytest.raises(DataNotFoundError, match="broke off.*run it again to resume"):
        download_file(f"{server.url}/big.bin", tmp_path / "d" / "big.bin", sha(data), progress=False)
    assert contents(tmp_path / "d") == [".big.bin.part"]  # kept for the next try, never in place
    assert (tmp_path / "d" / ".big.bin.part").read_bytes() == data[:30_000]


@pytest.mark.parametrize("code", [403, 404, 500])
def test_download_file_http_error(server, tmp_path, code):
    server.routes["/a.txt"] = status(code)
    with pytest.raises(DataNotFoundError, match=f"HTTP {code}"):
        download_file(f"{server.url}/a.txt", tmp_path / "d" / "a.txt", sha(TINY), progress=False)
    assert contents(tmp_path / "d") == []


def test_download_file_timeout(server, tmp_path):
    # A server that answers after 5 s, a 0.2 s timeout: the download gives up long before the
    # answer (a client without the timeout would wait the 5 s and get the file), with room to spare
    # on a busy machine.
    server.routes["/a.txt"] = slow(TINY, 5.0)
    t0 = time.monotonic()
    with pytest.raises(DataNotFoundError):
        download_file(f"{server.url}/a.txt", tmp_path / "d" / "a.txt", sha(TINY), progress=False, timeout=0.2)
    assert time.monotonic() - t0 < 2.5
    assert contents(tmp_path / "d") == []


def test_lookup_order_explicit_then_labkit_data_then_cache(tiny, tmp_path, monkeypatch, isolated):
    explicit, data = tmp_path / "explicit", tmp_path / "data"
    for path in (explicit / "a.txt", data / "tiny" / "a.txt", isolated / "tiny" / "a.txt"):
        path.parent.mkdir(parents=True)
        path.write_bytes(tiny)
    monkeypatch.setenv("LABKIT_DATA", str(data))
    assert locate("tiny", "a.txt", explicit) == explicit / "a.txt"
    assert locate("tiny", "a.txt", str(data)) == data / "tiny" / "a.txt"  # a root holding <dataset>/
    assert locate("tiny", "a.txt") == data / "tiny" / "a.txt"
    monkeypatch.delenv("LABKIT_DATA")
    assert locate("tiny", "a.txt") == isolated / "tiny" / "a.txt"


def test_locate_downloads_into_cache_never_into_labkit_data(tiny, server, tmp_path, monkeypatch, isolated):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o555)  # read-only, as in CI
    monkeypatch.setenv("LABKIT_DATA", str(data))
    server.routes["/tiny/a.txt"] = tiny
    path = locate("tiny", "a.txt", mirror=server.url)
    assert path == isolated / "tiny" / "a.txt" and path.read_bytes() == tiny
    assert contents(data) == [] and contents(isolated / "tiny") == ["a.txt"]
    monkeypatch.setenv("LABKIT_DATA_MIRROR", server.url + "/")  # env mirror, trailing slash
    assert locate("tiny", "a.txt") == path and server.hits == ["/tiny/a.txt"]  # cached: no new request


def test_locate_env_mirror(tiny, server, monkeypatch, isolated):
    server.routes["/tiny/a.txt"] = tiny
    monkeypatch.setenv("LABKIT_DATA_MIRROR", server.url)
    assert locate("tiny", "a.txt").read_bytes() == tiny


@pytest.mark.parametrize("how", ["env", "argument"])
def test_offline_without_files(tiny, server, monkeypatch, isolated, how):
    server.routes["/tiny/a.txt"] = tiny
    kw = {"download": False} if how == "argument" else {}
    if how == "env":
        monkeypatch.setenv("LABKIT_OFFLINE", "1")
    with pytest.raises(DataNotFoundError) as err:
        locate("tiny", "a.txt", mirror=server.url, **kw)
    msg = str(err.value)
    assert "$LABKIT_DATA/tiny/" in msg and str(isolated / "tiny") in msg and "\n" not in msg
    assert server.hits == [] and contents(isolated) == []


def test_no_network_names_where_to_put_files(tiny, isolated):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataNotFoundError) as err:
        locate("tiny", "a.txt", mirror=f"http://127.0.0.1:{port}")
    msg = str(err.value)
    assert "LABKIT_DATA" in msg and str(isolated / "tiny") in msg and "connection" in msg
    assert contents(isolated / "tiny") == []


def test_no_known_download(isolated):
    with pytest.raises(DataNotFoundError, match="no known download") as err:
        locate("wikitext-2-raw", "wiki.test.raw")
    assert "$LABKIT_DATA/wikitext-2-raw/" in str(err.value) and str(isolated / "wikitext-2-raw") in str(err.value)


def test_local_file_checks(tiny, tmp_path):
    (tmp_path / "a.txt").write_bytes(tiny + b"!")
    with pytest.raises(ChecksumError, match="bytes"):
        locate("tiny", "a.txt", tmp_path)
    (tmp_path / "a.txt").write_bytes(tiny.upper())  # right size, wrong bytes
    assert locate("tiny", "a.txt", tmp_path) == tmp_path / "a.txt"  # size check only
    with pytest.raises(ChecksumError, match=sha(tiny)):
        locate("tiny", "a.txt", tmp_path, verify=True)


def test_unknown_names():
    with pytest.raises(LabkitError, match="train, valid, test"):
        wikitext2_lines("dev")
    with pytest.raises(LabkitError, match="valid splits: test$"):
        wikitext2_lines("train", raw=True)
    with pytest.raises(LabkitError, match="train, dev, test"):
        sst2("valid")
    with pytest.raises(LabkitError, match="unknown dataset"):
        locate("wikitext-3", "train.txt")
    with pytest.raises(LabkitError, match="no file"):
        locate("sst2", "train.txt")


def test_wikitext2_lines_keep_content_exactly(monkeypatch, tmp_path):
    # \x0b and \u2028 are line breaks to str.splitlines(); they must stay inside their line.
    text = " = Title = \n \n a\x0bb \u2028 c @-@ d \n \n".encode()
    spec = {"valid.txt": FileSpec(sha(text), len(text))}
    monkeypatch.setitem(corpora.DATASETS, "wikitext-2", Dataset(files=spec, base_url=None))
    (tmp_path / "valid.txt").write_bytes(text)
    assert wikitext2_lines("valid", tmp_path, verify=True) == [" = Title = ", " ", " a\x0bb \u2028 c @-@ d ", " "]


def _tiny_sst2(monkeypatch) -> dict[str, bytes]:
    files = {
        "train.tsv": b'sentence\tlabel\nit \'s "great" \t1\nbad \t0\n',
        "dev.tsv": b"sentence\tlabel\nfine . \t1\n",
        "test.tsv": b"index\tsentence\n0\tan `` odd '' one .\n",
    }
    specs = {name: FileSpec(sha(data), len(data)) for name, data in files.items()}
    monkeypatch.setitem(corpora.DATASETS, "sst2", Dataset(specs, base_url=None, archive="SST-2.zip", archive_dir="SST-2"))
    return files


def _zip(files: dict[str, bytes], folder: str = "SST-2") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(f"{folder}/{name}", data)
    return buf.getvalue()


def test_sst2_parsing(monkeypatch, tmp_path):
    for name, data in _tiny_sst2(monkeypatch).items():
        (tmp_path / name).write_bytes(data)
    assert sst2("train", tmp_path) == [('it \'s "great"', 1), ("bad", 0)]
    assert sst2("dev", tmp_path) == [("fine .", 1)]
    assert sst2("test", tmp_path) == [("an `` odd '' one .", -1)]


def test_archive_download_extracts_and_verifies(monkeypatch, server, isolated):
    files = _tiny_sst2(monkeypatch)
    server.routes["/sst2/SST-2.zip"] = _zip(files)
    assert sst2("dev", mirror=server.url) == [("fine .", 1)]
    assert contents(isolated / "sst2") == ["dev.tsv", "test.tsv", "train.tsv"]
    assert sst2("train") == [('it \'s "great"', 1), ("bad", 0)] and len(server.hits) == 1


def test_archive_with_a_bad_member_leaves_nothing(monkeypatch, server, isolated):
    files = _tiny_sst2(monkeypatch)
    server.routes["/sst2/SST-2.zip"] = _zip({**files, "test.tsv": files["test.tsv"].upper()})
    with pytest.raises(ChecksumError, match="SST-2/test.tsv"):
        sst2("dev", mirror=server.url)
    assert contents(isolated / "sst2") == []


@pytest.mark.parametrize("body", ["not a zip", "missing member"])
def test_archive_not_as_expected(monkeypatch, server, isolated, body):
    files = _tiny_sst2(monkeypatch)
    server.routes["/sst2/SST-2.zip"] = b"<html>oops</html>" if body == "not a zip" else _zip(files, folder="other")
    with pytest.raises(DataNotFoundError, match="not the expected zip"):
        sst2("dev", mirror=server.url)
    assert contents(isolated / "sst2") == []


# --- integration tests: the real files in $LABKIT_DATA ---------------------------------------


@pytest.mark.integration
def test_real_files_located_and_verified(labkit_data, monkeypatch):
    monkeypatch.setenv("LABKIT_DATA", str(labkit_data))
    for name, ds in corpora.DATASETS.items():
        if not (labkit_data / name).is_dir():  # WikiText-103 and IMDB are not in the shared data
            continue
        for filename in ds.files:
            path = locate(name, filename, download=False, verify=True)
            assert path == labkit_data / name / filename


@pytest.mark.integration
def test_real_wikitext2_counts(labkit_data):
    train = wikitext2_lines("train", labkit_data, download=False)
    assert len(train) == 36_718
    assert sum(len(line.split()) + 1 for line in train) == 2_088_628  # tokens incl. <eos>
    assert train[1].startswith(" = Valkyria Chronicles III = ")
    assert len(wikitext2_lines("valid", labkit_data)) == 3_760
    assert len(wikitext2_lines("test", labkit_data)) == 4_358
    assert len(wikitext2_lines("test", labkit_data, raw=True)) == 4_358


@pytest.mark.integration
def test_real_sst2_counts(labkit_data):
    train = sst2("train", labkit_data, download=False)
    assert len(train) == 67_349
    assert [sum(label == k for _, label in train) for k in (0, 1)] == [29_780, 37_569]
    assert not any(s.endswith(" ") for s, _ in train)
    dev = sst2("dev", labkit_data)
    assert len(dev) == 872 and sum(label for _, label in dev) == 444
    test = sst2("test", labkit_data)
    assert len(test) == 1_821 and {label for _, label in test} == {-1}


@pytest.mark.integration
def test_real_lookup_explicit_beats_labkit_data(labkit_data, tmp_path, monkeypatch):
    shutil.copy(labkit_data / "wikitext-2" / "valid.txt", tmp_path / "valid.txt")
    monkeypatch.setenv("LABKIT_DATA", str(labkit_data))
    assert locate("wikitext-2", "valid.txt", tmp_path, verify=True) == tmp_path / "valid.txt"
    assert locate("wikitext-2", "valid.txt") == labkit_data / "wikitext-2" / "valid.txt"


@pytest.fixture(scope="module")
def real_sst2_zip(labkit_data) -> bytes:
    return _zip({name: (labkit_data / "sst2" / name).read_bytes() for name in ("train.tsv", "dev.tsv", "test.tsv")})


@pytest.mark.integration
def test_real_download_wikitext2(labkit_data, server, monkeypatch, isolated):
    data = (labkit_data / "wikitext-2" / "valid.txt").read_bytes()
    server.routes["/wikitext-2/valid.txt"] = data
    monkeypatch.setenv("LABKIT_DATA_MIRROR", server.url)
    assert len(wikitext2_lines("valid")) == 3_760
    assert sha((isolated / "wikitext-2" / "valid.txt").read_bytes()) == corpora.DATASETS["wikitext-2"].files["valid.txt"].sha256
    assert contents(isolated / "wikitext-2") == ["valid.txt"]


@pytest.mark.integration
def test_real_download_sst2_zip(real_sst2_zip, server, isolated):
    server.routes["/sst2/SST-2.zip"] = real_sst2_zip
    assert len(sst2("dev", mirror=server.url)) == 872
    assert contents(isolated / "sst2") == ["dev.tsv", "test.tsv", "train.tsv"]
    assert locate("sst2", "train.tsv", download=False, verify=True) == isolated / "sst2" / "train.tsv"


@pytest.mark.integration
def test_real_download_altered_bytes(labkit_data, server, isolated):
    data = bytearray((labkit_data / "wikitext-2" / "valid.txt").read_bytes())
    data[1000] ^= 1  # one flipped bit, same size
    server.routes["/wikitext-2/valid.txt"] = bytes(data)
    with pytest.raises(ChecksumError) as err:
        locate("wikitext-2", "valid.txt", mirror=server.url)
    expected = corpora.DATASETS["wikitext-2"].files["valid.txt"].sha256
    assert "valid.txt" in str(err.value) and expected in str(err.value) and sha(bytes(data)) in str(err.value)
    assert contents(isolated / "wikitext-2") == []


@pytest.mark.integration
def test_real_download_sst2_altered_member(labkit_data, server, isolated):
    files = {name: (labkit_data / "sst2" / name).read_bytes() for name in ("train.tsv", "dev.tsv", "test.tsv")}
    files["dev.tsv"] = files["dev.tsv"].replace(b"\t1\n", b"\t0\n", 1)
    server.routes["/sst2/SST-2.zip"] = _zip(files)
    with pytest.raises(ChecksumError, match="SST-2/dev.tsv"):
        sst2("train", mirror=server.url)
    assert contents(isolated / "sst2") == []


@pytest.mark.integration
def test_real_download_server_dies(labkit_data, server, isolated):
    data = (labkit_data / "wikitext-2" / "valid.txt").read_bytes()
    server.routes["/wikitext-2/valid.txt"] = dies_after(data, 400_000)
    with pytest.raises(DataNotFoundError) as err:
        locate("wikitext-2", "valid.txt", mirror=server.url)
    assert "broke off" in str(err.value) and "LABKIT_DATA" in str(err.value)
    assert contents(isolated / "wikitext-2") == [".valid.txt.part"]


@pytest.mark.integration
@pytest.mark.parametrize("code", [403, 404])
def test_real_download_http_error(labkit_data, server, isolated, code):
    if code == 403:
        server.routes["/wikitext-2/test.txt"] = status(403)
    with pytest.raises(DataNotFoundError) as err:
        wikitext2_lines("test", mirror=server.url)
    msg = str(err.value)
    assert f"HTTP {code}" in msg and f"{server.url}/wikitext-2/test.txt" in msg and "$LABKIT_DATA/wikitext-2/" in msg
    assert contents(isolated / "wikitext-2") == []
