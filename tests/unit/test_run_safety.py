"""What a run directory refuses, in-process: links that lead out of it, files that are no files or
too large for their kind, JSON of any shape, a second writer; and what the writer lock cleans up.
The same failures through real processes are in tests/fuzz/test_hostile_runs.py and
tests/crash/test_concurrency.py."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from labkit.atomic import MAX_JSON_DEPTH, parse_json, read_bounded
from labkit.cli import main
from labkit.data import WordTokenizer, load_tokenizer
from labkit.errors import LabkitError, RunError
from labkit.runs import MetricsWriter, RunDir, read_metrics, remove_run, safe_run_path, writer_lock
from labkit.runs.lock import acquire

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(autouse=True)
def alarm():
    """A read that hangs (a FIFO opened for reading waits for a writer) fails the test instead."""
    def hung(signum, frame):
        raise TimeoutError("hung")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_bounded_reads_take_regular_files_up_to_their_limit(tmp_path: Path) -> None:
    exact = tmp_path / "exact"
    exact.write_bytes(b"x" * 100)
    assert read_bounded(exact, 100, "config") == b"x" * 100
    with pytest.raises(LabkitError, match=r"^the config .*/exact is 100 bytes, more than a config may be \(99 bytes\)"):
        read_bounded(exact, 99, "config")
    zero = tmp_path / "zero"
    zero.symlink_to("/dev/zero")
    with pytest.raises(LabkitError, match=r"zero \(a link to /dev/zero\) is a character device, not a file"):
        read_bounded(zero, 10**9, "config")
    with pytest.raises(LabkitError, match="is a FIFO, not a file"):
        read_bounded(fifo(tmp_path / "pipe"), 100, "config")
    with pytest.raises(LabkitError, match="is a folder, not a file"):
        read_bounded(tmp_path, 100, "config")
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "missing", 100, "config")


def test_json_of_any_shape_is_parsed_or_refused_with_a_reason() -> None:
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    value = parse_json(at_limit)
    for _ in range(MAX_JSON_DEPTH - 1):
        value = value[0]
    assert value == []
    for text in ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), DEEP, '{"a": ' * 5000 + "1" + "}" * 5000):
        with pytest.raises(ValueError, match=f"^nested more than {MAX_JSON_DEPTH} levels deep$"):
            parse_json(text)
    with pytest.raises(ValueError, match=r"^not valid JSON: Expecting value \(line 1, column 1\)$"):
        parse_json(b"\x00")
    with pytest.raises(ValueError, match="^not UTF-8 text$"):
        parse_json(b'{"a": "\xff"}')


def small_run(root: Path) -> RunDir:
    run = RunDir(root)
    root.mkdir(parents=True)
    WordTokenizer.train(["a b c"], specials=("<unk>", "<eos>")).save(run.tokenizer_path)
    run.save_config({"kind": "lm"})
    run.write_card({"status": "finished"})
    return run


@pytest.mark.parametrize("name", ["config.json", "card.json", "tokenizer.json"])
def test_damaged_json_files_of_a_run_are_one_line_errors_that_name_them(tmp_path: Path, name: str) -> None:
    run = small_run(tmp_path / "run")
    path = run.root / name
    read = (lambda: load_tokenizer(path)) if name == "tokenizer.json" else (lambda: run.read_json(path))
    outside = tmp_path / "outside.json"
    outside.write_text('{"kind": "lm"}')
    tokenizer = name == "tokenizer.json"  # read by labkit.data, which knows no runs: links are load_run's
    for damage, words in ((lambda: path.write_text(DEEP), "levels deep"),
                          (lambda: path.symlink_to("/dev/zero"), "character device" if tokenizer else
                           "leads outside the run (to /dev/zero)"),
                          (lambda: fifo(path), "FIFO"),
                          (lambda: path.write_text("{" + " " * (2 << 20) + "}"), "more than"),
                          (lambda: path.symlink_to(outside), "leads outside the run")):
        path.unlink()
        damage()
        if tokenizer and words in ("more than", "leads outside the run"):
            continue  # a tokenizer may be that large; its link is checked by load_run (below)
        with pytest.raises(LabkitError) as error:
            read()
        message = str(error.value)
        assert name in message and words in message and "\n" not in message, message


def test_load_run_refuses_a_tokenizer_that_leads_outside(tmp_path: Path) -> None:
    from labkit.runs import load_run

    run = small_run(tmp_path / "run")
    (tmp_path / "tok.json").write_bytes(run.tokenizer_path.read_bytes())
    run.tokenizer_path.unlink()
    run.tokenizer_path.symlink_to(tmp_path / "tok.json")
    run.save_config({"kind": "lm", "model": {"family": "rnn", "cell": "lstm", "vocab_size": 5}})
    with pytest.raises(RunError, match="tokenizer.json leads outside the run"):
        load_run(run.root)


def test_the_metrics_writer_never_follows_a_link_out_of_the_run(tmp_path: Path) -> None:
    run = small_run(tmp_path / "run")
    outside = tmp_path / "precious.txt"
    outside.write_bytes(b'{"step": 1}\n{"step": 2, "tor')  # no newline at the end: would be cut
    run.metrics_path.symlink_to(outside)
    with pytest.raises(RunError, match="metrics.jsonl leads outside the run"):
        MetricsWriter(run.metrics_path)
    assert read_metrics(run.metrics_path) == []  # readers skip it
    assert outside.read_bytes() == b'{"step": 1}\n{"step": 2, "tor'
    run.metrics_path.unlink()
    fifo(run.metrics_path)
    with pytest.raises(RunError, match="metrics.jsonl is not a regular file"):
        MetricsWriter(run.metrics_path)
    assert read_metrics(run.metrics_path) == []


def test_a_deep_metrics_line_is_skipped_and_a_torn_tail_cut(tmp_path: Path) -> None:
    run = small_run(tmp_path / "run")
    run.metrics_path.write_text('{"step": 1}\n' + DEEP + '\n{"step": 3}\n{"step": 4, "lo')
    assert read_metrics(run.metrics_path) == [{"step": 1}, {"step": 3}]
    writer = MetricsWriter(run.metrics_path)
    assert run.metrics_path.read_text().endswith('{"step": 3}\n')
    writer.write({"step": 5})
    writer.truncate_after(3)
    assert run.metrics_path.read_text() == '{"step": 1}\n{"step": 3}\n'


def test_checkpoints_never_go_through_a_link_out_of_the_run(tmp_path: Path) -> None:
    run = small_run(tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    for name in (".tmp-abc", "step-00000001"):
        (elsewhere / name).mkdir(parents=True)
        (elsewhere / name / "keep").write_text("mine")
    run.checkpoints_dir.symlink_to(elsewhere)
    before = sorted(str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*"))
    with pytest.raises(RunError, match="checkpoints leads outside the run"):
        run.save_checkpoint(torch.nn.Linear(2, 2), {"step": 2}, 2)
    with pytest.raises(RunError, match="checkpoints leads outside the run"):
        run.check_confined()
    run.remove_stale_files()
    assert sorted(str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*")) == before


def test_one_writer_per_run_and_the_second_is_told_who(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "runs" / "a")
    with writer_lock(run) as lock:
        assert lock.created and (run.root / ".lock").is_file()
        with pytest.raises(RunError, match=rf"^{run.root} is being written by process {os.getpid()} \("):
            acquire(run)
        with pytest.raises(RunError, match=f"being written by process {os.getpid()}"):
            remove_run(run)
        run.write_card({"status": "running"})
    assert sorted(p.name for p in run.root.iterdir()) == ["card.json"]  # the lock file goes with the lock
    acquire(run).release()  # free again


def test_the_lock_removes_only_a_run_it_made_that_never_started(tmp_path: Path) -> None:
    made = RunDir(tmp_path / "made")
    with pytest.raises(KeyboardInterrupt), writer_lock(made):
        made.save_config({"kind": "lm"})
        raise KeyboardInterrupt  # Ctrl-C while the data loads
    assert not made.root.exists() and list(tmp_path.iterdir()) == []
    started = RunDir(tmp_path / "started")
    with pytest.raises(RunError), writer_lock(started):
        started.write_card({"status": "running"})
        raise RunError("the disk is full")
    assert started.card_path.is_file()
    theirs = small_run(tmp_path / "theirs")
    theirs.card_path.unlink()
    with pytest.raises(RunError), writer_lock(theirs):
        raise RunError("a bad setting")
    assert theirs.config_path.is_file()  # it was there before: not this lock's to remove


def test_run_names_longer_than_a_file_name_are_refused(tmp_path: Path) -> None:
    assert safe_run_path(tmp_path, "n" * 255).name == "n" * 255
    with pytest.raises(RunError, match="it is 256 bytes long, more than the 255 a file name may have"):
        safe_run_path(tmp_path, "n" * 256)
    with pytest.raises(RunError, match="it is 300 bytes long"):
        safe_run_path(tmp_path, "é" * 150)


@pytest.mark.parametrize("argv, words", [
    (["pretrain", "--epochs", "nan"], "labkit pretrain: error: argument --epochs: 'nan' is not a finite number"),
    (["pretrain", "--epochs", "-1"], "labkit pretrain: error: argument --epochs: -1 is out of range: it must be "
                                     "above 0 and at most 1,000,000"),
    (["pretrain", "--seed", "1180591620717411303424"], "labkit pretrain: error: argument --seed: "
                                                       "1180591620717411303424 is out of range"),
    (["finetune", "x", "--seed", "-1"], "labkit finetune: error: argument --seed: -1 is out of range"),
    (["pretrain", "--name", "n" * 300], "labkit: error: invalid run name"),
    (["eval", "x", "--stride", "two"], "labkit eval: error: argument --stride: invalid int value: 'two'"),
    (["pretrain", "--bogus"], "labkit: error: unrecognized arguments: --bogus (see: labkit --help)"),
])
def test_flag_value_errors_are_one_line(argv, words, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith(words) and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_run_being_created_is_not_a_users_folder(tmp_path):
    """check_new refuses a folder of a user's files, not one where another process is creating a
    run (its tokenizer written, its config not yet): that one is left to the lock to name."""

    being_made = tmp_path / "a"
    being_made.mkdir()
    (being_made / "tokenizer.json").write_text("{}")
    (being_made / ".lock").write_text("")
    RunDir(being_made).check_new()
    mine = tmp_path / "b"
    mine.mkdir()
    (mine / "tokenizer.json").write_text("{}")
    (mine / "todo.txt").write_text("buy milk\n")
    with pytest.raises(RunError, match=r"holds files of its own \(todo.txt\)"):
        RunDir(mine).check_new()


def test_remove_run_takes_a_run_or_its_folder_and_removes_only_it(tmp_path: Path) -> None:
    keep = small_run(tmp_path / "keep")
    for given in (lambda p: RunDir(p), lambda p: p, lambda p: str(p)):
        small_run(tmp_path / "gone")
        remove_run(given(tmp_path / "gone"))  # (a Path's own .root is "/": never that)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
    assert keep.config_path.is_file()
