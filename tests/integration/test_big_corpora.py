"""WikiText-103 and IMDB, end to end against a real HTTP server on 127.0.0.1 serving small
archives built here (a few lines, a few reviews; no real download): download (resumed after a
broken connection, with or without the server's Range support), verification against the
fixture's pinned size and sha256, safe extraction, the splits read back, and the command line
training on them. No data from $LABKIT_DATA: these are unit-tier tests in all but their server.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from httpserver import contents, dies_after, in_turn, ranged, serve, sha

from labkit.cli import main
from labkit.data import corpora, lm
from labkit.data.archives import UnsafeArchiveError
from labkit.data.corpora import FileSpec, TextLines, imdb, locate, wikitext103_lines
from labkit.data.lm import DataConfig, encode_stream, load_lm_data
from labkit.data.normalize import review_to_sst
from labkit.data.tasks import task_rows
from labkit.data.tokenizers import WordTokenizer
from labkit.errors import ChecksumError, DataNotFoundError, LabkitError

WT103 = "/wikitext-103/wikitext-103-v1.zip"
IMDB = "/imdb/aclImdb_v1.tar.gz"


@pytest.fixture
def server():
    with serve() as srv:
        yield srv


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, server) -> Path:
    """A fresh cache, downloads from the local server, nothing from the caller's environment."""
    for var in ("LABKIT_DATA", "LABKIT_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LABKIT_DATA_MIRROR", server.url)
    return tmp_path / "cache"


def pin(monkeypatch, dataset: str, archive: bytes) -> None:
    """Pin the fixture archive's size and sha256 in place of the real one's."""
    spec = FileSpec(sha(archive), len(archive))
    monkeypatch.setitem(corpora.DATASETS, dataset, dataclasses.replace(corpora.DATASETS[dataset], archive_spec=spec))


# --- fixtures: a WikiText-103 zip and an IMDB tar.gz, a few lines each --------------------------


def wikitext_text(n_lines: int, seed: int) -> str:
    """WikiText-shaped lines: " = Heading = ", blank " " lines, tokenized sentences."""
    rng = random.Random(seed)
    words = ["the", "a", "of", "game", "was", "released", "in", "Japan", "<unk>", "@-@", ",", "album", "song",
             "and", "it", "'s", "first", "city", "team", "won", "1 @,@ 000", "Valkyria", "season", "played"]
    lines = []
    for i in range(n_lines):
        if i % 25 == 0:
            lines += [f" = Heading {i} = ", " "]
        lines.append(" " + " ".join(rng.choice(words) for _ in range(rng.randint(6, 20))) + " . ")
    return "".join(line + "\n" for line in lines)


WT_SPLITS = {"train": wikitext_text(300, 0), "valid": wikitext_text(40, 1), "test": wikitext_text(40, 2)}


def wikitext_zip(extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("wikitext-103/", b"")
        for split, text in WT_SPLITS.items():
            zf.writestr(f"wikitext-103/wiki.{split}.tokens", text.encode())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


REVIEWS = {  # (split, kind) -> reviews, as files: line breaks, tabs, HTML breaks, non-ASCII text
    ("train", "pos"): ["I loved this film.<br /><br />It's a gem, don't miss it!", "Great acting\tand a great script.",
                       "A well-made, moving story; 10/10.", "Superb! The best film of 1999."],
    ("train", "neg"): ["Dull.\nI couldn't finish it.", "The worst movie I've seen -- avoid.",
                       "Boring plot, wooden acting.", "Café scenes aside, a mess."],
    ("test", "pos"): ["Wonderful and witty.", "A delight from start to end."],
    ("test", "neg"): ["Terrible.", "Not worth 2.5 hours."],
    ("train", "unsup"): ["An odd film about a café.", "I watched it twice.<br />Still unsure.",
                         "The director's cut runs longer.", "Seen it? Tell me."],
}


def imdb_tar(extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        for folder in ("aclImdb", "aclImdb/train", "aclImdb/test"):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        add("aclImdb/imdb.vocab", b"the\nfilm\n")  # files labkit does not read
        add("aclImdb/train/labeledBow.feat", b"1 0:1\n")
        for (split, kind), reviews in REVIEWS.items():
            for i, review in enumerate(reviews):
                add(f"aclImdb/{split}/{kind}/{i}_{0 if kind == 'unsup' else 7}.txt", review.encode())
        for info in extra or []:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buf.getvalue()


def one_line(review: str) -> str:
    return review.replace("\n", " ").replace("\t", " ")


# --- WikiText-103 -----------------------------------------------------------------------------


def test_wikitext103_downloads_and_extracts_the_splits(server, monkeypatch, isolated):
    archive = wikitext_zip()
    pin(monkeypatch, "wikitext-103", archive)
    server.routes[WT103] = archive  # a server without Range support: it is not needed here
    for split, text in WT_SPLITS.items():
        assert list(wikitext103_lines(split)) == text.split("\n")[:-1]
    # the files, named as WikiText-2's; the archive deleted once unpacked; no partial file or lock left
    assert contents(isolated / "wikitext-103") == ["test.txt", "train.txt", "valid.txt"]
    assert (isolated / "wikitext-103" / "train.txt").read_text() == WT_SPLITS["train"]
    assert server.hits == [WT103] and server.ranges == [None]
    assert locate("wikitext-103", "valid.txt", verify=True) == isolated / "wikitext-103" / "valid.txt"
    assert len(server.hits) == 1  # on disk now: no second download


@pytest.mark.parametrize("honours_range", [True, False], ids=["server-resumes", "server-ignores-range"])
def test_an_interrupted_download_resumes(server, monkeypatch, isolated, honours_range):
    archive = wikitext_zip()
    pin(monkeypatch, "wikitext-103", archive)
    half = len(archive) // 2
    server.routes[WT103] = in_turn(dies_after(archive, half), ranged(archive) if honours_range else archive)
    with pytest.raises(DataNotFoundError, match="broke off.*run it again to resume") as err:
        wikitext103_lines("train")
    assert "\n" not in str(err.value)
    folder = isolated / "wikitext-103"
    assert contents(folder) == [".wikitext-103-v1.zip.part"]  # the half kept, nothing in place
    assert (folder / ".wikitext-103-v1.zip.part").read_bytes() == archive[:half]

    assert list(wikitext103_lines("valid")) == WT_SPLITS["valid"].split("\n")[:-1]
    assert server.ranges == [None, f"bytes={half}-"]  # the second request asked for the rest only
    assert contents(folder) == ["test.txt", "train.txt", "valid.txt"]
    assert (folder / "train.txt").read_text() == WT_SPLITS["train"]


def test_a_corrupted_download_is_refused_and_leaves_nothing(server, monkeypatch, isolated):
    archive = wikitext_zip()
    pin(monkeypatch, "wikitext-103", archive)
    bad = bytearray(archive)
    bad[len(bad) // 3] ^= 1  # one flipped bit, the same size
    server.routes[WT103] = bytes(bad)
    with pytest.raises(ChecksumError) as err:
        wikitext103_lines("train")
    msg = str(err.value)
    assert "\n" not in msg and sha(archive) in msg and sha(bytes(bad)) in msg and "wikitext-103-v1.zip" in msg
    assert contents(isolated / "wikitext-103") == []
    # a partial file that the rest does not match (the file changed on the server) is refused too
    server.routes[WT103] = in_turn(dies_after(archive, 100), ranged(bytes(bad)))
    with pytest.raises(DataNotFoundError, match="broke off"):
        wikitext103_lines("train")
    with pytest.raises(ChecksumError, match=sha(archive)):
        wikitext103_lines("train")
    assert contents(isolated / "wikitext-103") == [] and server.ranges[-1] == "bytes=100-"


def test_offline_says_what_to_do(server, monkeypatch, isolated):
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    monkeypatch.delenv("LABKIT_DATA_MIRROR")
    with pytest.raises(DataNotFoundError) as err:
        wikitext103_lines("train")
    msg = str(err.value)
    real = corpora.DATASETS["wikitext-103"].archive_spec
    for part in ("LABKIT_OFFLINE is set", "wikitext-103-v1.zip", real.sha256, "$LABKIT_DATA/wikitext-103/",
                 str(isolated / "wikitext-103"), "190 MB", "https://wikitext.smerity.com/wikitext-103-v1.zip"):
        assert part in msg
    assert "\n" not in msg and server.hits == [] and contents(isolated) == []


def test_an_archive_put_by_hand_is_unpacked_without_a_download(server, monkeypatch, isolated, tmp_path):
    archive = wikitext_zip()
    pin(monkeypatch, "wikitext-103", archive)
    data = tmp_path / "data"
    (data / "wikitext-103").mkdir(parents=True)
    (data / "wikitext-103" / "wikitext-103-v1.zip").write_bytes(archive)
    (data / "wikitext-103").chmod(0o555)  # read-only, as in CI: labkit unpacks into its cache
    monkeypatch.setenv("LABKIT_DATA", str(data))
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    assert list(wikitext103_lines("test")) == WT_SPLITS["test"].split("\n")[:-1]
    assert contents(data / "wikitext-103") == ["wikitext-103-v1.zip"] and server.hits == []
    assert contents(isolated / "wikitext-103") == ["test.txt", "train.txt", "valid.txt"]


def test_wikitext2_files_are_never_taken_for_wikitext103(monkeypatch, isolated, tmp_path):
    """`--data DIR` may hold a file itself, but only one pinned on its own: WikiText-103's files are
    pinned by their archive alone, and share WikiText-2's names."""
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    (tmp_path / "train.txt").write_text(" = WikiText-2 = \n")
    with pytest.raises(DataNotFoundError, match="wikitext-103/train.txt not found"):
        wikitext103_lines("train", tmp_path)
    (tmp_path / "wikitext-103").mkdir()
    (tmp_path / "wikitext-103" / "train.txt").write_text(" = WikiText-103 = \n")
    assert list(wikitext103_lines("train", tmp_path)) == [" = WikiText-103 = "]


def test_a_wrong_archive_put_by_hand_is_refused(monkeypatch, isolated, tmp_path):
    pin(monkeypatch, "wikitext-103", wikitext_zip())
    (tmp_path / "wikitext-103-v1.zip").write_bytes(wikitext_zip({"wikitext-103/extra.txt": b"x"}))
    with pytest.raises(ChecksumError, match="wikitext-103-v1.zip has .* bytes, expected"):
        wikitext103_lines("train", tmp_path)
    assert contents(isolated / "wikitext-103") == []


@pytest.mark.parametrize("member", ["wikitext-103/../../evil.txt", "/tmp/evil.txt"])
def test_a_zip_with_a_path_traversal_member_is_refused(server, monkeypatch, isolated, tmp_path, member):
    archive = wikitext_zip({member: b"gotcha"})
    pin(monkeypatch, "wikitext-103", archive)  # pinned as it is: the checksum matches, the member is refused
    server.routes[WT103] = archive
    with pytest.raises(UnsafeArchiveError, match="absolute path or '..'"):
        wikitext103_lines("train")
    assert contents(isolated / "wikitext-103") == []
    assert not list(tmp_path.rglob("evil.txt"))


# --- IMDB -------------------------------------------------------------------------------------


def test_imdb_downloads_and_packs_the_reviews(server, monkeypatch, isolated):
    archive = imdb_tar()
    pin(monkeypatch, "imdb", archive)
    server.routes[IMDB] = ranged(archive)
    for split in ("train", "test"):
        expected = [(one_line(r), 1) for r in REVIEWS[split, "pos"]] + [(one_line(r), 0) for r in REVIEWS[split, "neg"]]
        assert sorted(imdb(split)) == sorted(expected)
    assert imdb("unsup") == [(one_line(r), -1) for r in REVIEWS["train", "unsup"]]  # in archive order
    assert contents(isolated / "imdb") == ["test.tsv", "train.tsv", "unsup.txt"] and server.hits == [IMDB]


def test_imdb_as_a_task_is_normalised_like_sst2(server, monkeypatch):
    archive = imdb_tar()
    pin(monkeypatch, "imdb", archive)
    server.routes[IMDB] = archive
    train, val, test = task_rows("imdb", val_size=2)
    expected = {(review_to_sst(r), int(kind == "pos")) for kind in ("pos", "neg") for r in REVIEWS["train", kind]}
    assert len(val) == 2 and set(train + val) == expected and len(train) == 6
    assert sorted(label for _, label in test) == [0, 0, 1, 1]
    assert review_to_sst(REVIEWS["train", "pos"][0]) == "I loved this film . It 's a gem , do n't miss it !"
    with pytest.raises(LabkitError, match="leaves none of the 8 training sentences"):
        task_rows("imdb", val_size=8)


def test_imdbs_unlabelled_reviews_are_language_model_text_for_sst2_too(server, monkeypatch, tmp_path):
    """SST-2 has no unlabelled text of its own: with --lm-text all+unsup its LM step reads IMDB's
    unsup reviews (movie reviews: its domain), found as the imdb corpus is, not in SST-2's folder."""
    from labkit.data.tasks import TextEncoder, unlabelled_stream
    from labkit.train.finetune import FinetuneConfig

    archive = imdb_tar()
    pin(monkeypatch, "imdb", archive)
    server.routes[IMDB] = archive
    words = " ".join(review_to_sst(r) for r in REVIEWS["train", "unsup"]).lower().split()
    encode = TextEncoder(WordTokenizer.train([" ".join(words)], split="whitespace"))
    sst2_folder = tmp_path / "sst2"  # a file where IMDB's would be in SST-2's folder: never read for IMDB's text
    (sst2_folder / "imdb").mkdir(parents=True)
    (sst2_folder / "imdb" / "unsup.txt").write_text("not a review\n")
    stream, count = unlabelled_stream("sst2", encode, data_dir=sst2_folder)
    assert count == len(REVIEWS["train", "unsup"]) and server.hits == [IMDB]
    eos = encode.tokenizer.eos_id
    first = stream[: stream.tolist().index(eos)].tolist()
    assert first == encode(review_to_sst(REVIEWS["train", "unsup"][0]))
    assert FinetuneConfig(task="sst2", lm_text="all+unsup").lm_text == "all+unsup"
    with pytest.raises(ValueError, match="number has none"):
        FinetuneConfig(task="number", lm_text="all+unsup")
    with pytest.raises(LabkitError, match="the number task has no unlabelled text"):
        unlabelled_stream("number", encode)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "device"])
def test_a_tar_with_an_unsafe_member_is_refused(server, monkeypatch, isolated, tmp_path, kind):
    info = tarfile.TarInfo({"dotdot": "aclImdb/../../evil.txt", "absolute": "/tmp/evil.txt"}.get(kind, "aclImdb/x"))
    if kind in ("dotdot", "absolute"):
        info.size = 3
    elif kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    else:
        info.type = tarfile.CHRTYPE
    archive = imdb_tar([info])
    pin(monkeypatch, "imdb", archive)
    server.routes[IMDB] = archive
    with pytest.raises(UnsafeArchiveError, match="refused"):
        imdb("train")
    assert contents(isolated / "imdb") == [] and not list(tmp_path.rglob("evil.txt"))


# --- the language-model data and the command line ---------------------------------------------


def test_text_lines_read_like_the_wikitext2_reader(tmp_path):
    path = tmp_path / "t.txt"
    for text in ["", "a\n", "a\n\n", "a\nb", " = T = \n \n a\x0bb \u2028 c\r d \n"]:
        path.write_bytes(text.encode())
        expected = text.split("\n")
        assert list(TextLines(path)) == (expected[:-1] if expected[-1] == "" else expected)


def test_streams_are_encoded_in_chunks_as_in_one_piece(monkeypatch):
    lines = WT_SPLITS["train"].split("\n")[:-1]
    tok = WordTokenizer.train(lines, specials=("<unk>", "<eos>"))
    monkeypatch.setattr(lm, "CHUNK_LINES", 7)
    stream, words = encode_stream(tok, iter(lines))
    assert torch.equal(stream, tok.encode_lines(lines)) and stream.dtype == torch.long
    assert words == sum(len(line.split()) + 1 for line in lines)


def test_load_lm_data_reads_wikitext103(server, monkeypatch):
    archive = wikitext_zip()
    pin(monkeypatch, "wikitext-103", archive)
    server.routes[WT103] = archive
    data = load_lm_data(DataConfig(corpus="wikitext-103"))
    assert data.train.numel() == sum(len(line.split()) + 1 for line in WT_SPLITS["train"].split("\n")[:-1])
    assert data.tokenizer.decode(data.valid[:7]) == "= Heading 0 = <eos> <eos> " + WT_SPLITS["valid"].split()[4]
    assert data.words_per_token == {"train": 1.0, "valid": 1.0, "test": 1.0}


def test_the_cli_pretrains_on_wikitext103_and_finetunes_on_imdb(server, monkeypatch, tmp_path, capsys):
    """`labkit pretrain --corpus wikitext-103` from the served fixture; then `labkit finetune --task
    imdb --lm-text all+unsup`, whose language-model step reads the fixture's reviews, the unlabelled
    ones too."""
    wt, reviews = wikitext_zip(), imdb_tar()
    pin(monkeypatch, "wikitext-103", wt)
    pin(monkeypatch, "imdb", reviews)
    server.routes[WT103], server.routes[IMDB] = wt, reviews
    runs = tmp_path / "runs"
    assert main(["pretrain", "--preset", "tiny", "--corpus", "wikitext-103", "--steps", "2", "--eval-every", "2",
                 "--runs-dir", str(runs), "--name", "wt", "--no-progress"]) == 0, capsys.readouterr().err
    card = json.loads((runs / "wt" / "card.json").read_text())
    config = json.loads((runs / "wt" / "config.json").read_text())
    assert card["steps"] == 2 and config["data"]["corpus"] == "wikitext-103"
    assert server.hits == [WT103]

    from labkit.train import adapt

    read = []  # the language-model step's text, as it reads it
    monkeypatch.setattr(adapt, "task_text", lambda *a, f=adapt.task_text: read.append(f(*a)) or read[-1])
    assert main(["finetune", "wt", "--task", "imdb", "--lm-text", "all+unsup", "--lm-steps", "2", "--max-steps", "2",
                 "--val-size", "2", "--vocab-min-count", "1", "--eval-every", "2", "--max-len", "32", "--runs-dir", str(runs),
                 "--name", "cls", "--no-progress", "--device", "cpu"]) == 0, capsys.readouterr().err
    card = json.loads((runs / "cls" / "card.json").read_text())
    assert (card["task"], card["lm_steps"], card["lm_text_sentences"], card["lm_text_unlabelled"]) == \
        ("imdb", 2, 6, len(REVIEWS["train", "unsup"]))
    assert card["vocab_added"] > 0  # the reviews' words (film, acting, ...) that WikiText's fixture lacks
    eos = read[0].tokenizer.eos_id
    assert [(part == eos).sum().item() for part in (read[0].train, read[0].valid)] == [6 + 4, 2]  # a review a line
    assert sum(map(sum, card["confusion_matrix"])) == 4  # the fixture's test reviews
    assert json.loads((runs / "cls" / "config.json").read_text())["finetune"]["max_len"] == 32
    assert "imdb test accuracy" in capsys.readouterr().out
