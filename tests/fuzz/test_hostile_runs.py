"""A run directory tampered with as a hostile user would, through real `labkit` processes: links
that lead out of the run (labkit must never write or delete through them), files that are no files
(a link to /dev/zero, a FIFO) or far too large, JSON nested 100,000 levels deep, and flag values
that are not numbers. Every case ends in one line and exit 2 (or, for readers such as `labkit
runs`, a line about the damaged run), within a time limit, and nothing outside the run changes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.runs import RunDir, read_metrics

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny LSTM run (4 steps, checkpoints at 2 and 4) on the generated corpus."""
    from labkit.data import DataConfig
    from labkit.models import RNNConfig
    from labkit.train import TrainConfig
    from labkit.train.pretrain import pretrain

    root = tmp_path_factory.mktemp("source") / "a"
    pretrain(RNNConfig(d_embed=16, d_hidden=16, n_layers=1, dropout=0.0),
             TrainConfig(max_steps=4, eval_every=2, log_every=1, batch_size=4, seq_len=16, device="cpu"),
             DataConfig(corpus="synthetic", train_tokens=4000, eval_tokens=300), root)
    return root


@pytest.fixture
def home(source: Path, tmp_path: Path) -> Path:
    """A working folder holding runs/a, a copy of the source run."""
    shutil.copytree(source, tmp_path / "runs" / "a")
    return tmp_path


def labkit(home: Path, *args: str, stdin=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LABKIT_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "labkit", *args], cwd=home, env=env, capture_output=True,
                          text=True, timeout=120, stdin=stdin)


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("labkit") and ": error: " in lines[0], result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def listed_problem(home: Path, *words: str) -> str:
    """`labkit runs` lists the damaged run with its problem on one line, exits 0, no traceback."""
    result = labkit(home, "runs")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    line = next((line for line in result.stdout.splitlines() if line.startswith("a: ")), "")
    for word in words:
        assert word in line, result.stdout
    return line


def snapshot(folder: Path) -> dict[str, bytes | str]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else "folder"
            for p in sorted(folder.rglob("*"))}


RESUME = ("pretrain", "--name", "a", "--resume", "--steps", "6", "--no-progress")


def test_a_metrics_file_linked_outside_is_never_written(home: Path) -> None:
    run = RunDir(home / "runs" / "a")
    outside = home / "precious.log"
    outside.write_bytes(run.metrics_path.read_bytes() + b'{"step": 3, "loss": 1.0, "torn')
    kept = outside.read_bytes()
    run.metrics_path.unlink()
    run.metrics_path.symlink_to(outside)
    one_line_error(labkit(home, *RESUME), "metrics.jsonl leads outside the run")
    assert outside.read_bytes() == kept
    assert run.metrics_path.is_symlink() and run.latest_checkpoint().name == "step-00000004"


def test_a_checkpoints_folder_linked_outside_is_never_written_or_pruned(home: Path) -> None:
    run = RunDir(home / "runs" / "a")
    elsewhere = home / "elsewhere"
    shutil.move(run.checkpoints_dir, elsewhere)
    for name in (".tmp-1234", "step-00000001", ".tmp-old-step-00000000"):
        (elsewhere / name).mkdir()
        (elsewhere / name / "notes.txt").write_text("not labkit's")
    run.checkpoints_dir.symlink_to(elsewhere)
    before = snapshot(elsewhere)
    one_line_error(labkit(home, *RESUME), "checkpoints leads outside the run")
    assert snapshot(elsewhere) == before
    one_line_error(labkit(home, "generate", "a", "--which", "last", "--device", "cpu"), "leads outside the run")
    assert snapshot(elsewhere) == before


@pytest.mark.parametrize("name", ["config.json", "card.json", "tokenizer.json"])
def test_a_run_file_linked_to_dev_zero(home: Path, name: str) -> None:
    path = home / "runs" / "a" / name
    path.unlink()
    path.symlink_to("/dev/zero")
    if name != "tokenizer.json":
        listed_problem(home, name, "leads outside the run (to /dev/zero)")
    if name != "card.json":
        for command in (("eval", "a", "--device", "cpu"), ("generate", "a", "--device", "cpu")):
            one_line_error(labkit(home, *command), name, "/dev/zero")
    else:
        one_line_error(labkit(home, *RESUME), name, "/dev/zero")


@pytest.mark.parametrize("name", ["config.json", "card.json", "tokenizer.json"])
def test_a_run_file_that_is_a_fifo(home: Path, name: str) -> None:
    path = home / "runs" / "a" / name
    path.unlink()
    os.mkfifo(path)
    if name != "tokenizer.json":
        listed_problem(home, name, "is a FIFO, not a file")
    command = ("generate", "a", "--device", "cpu") if name != "card.json" else RESUME
    one_line_error(labkit(home, *command), name, "is a FIFO")


def test_a_config_far_too_large_for_one(home: Path) -> None:
    run = RunDir(home / "runs" / "a")
    run.config_path.write_text(run.config_path.read_text()[:-2] + " " * (2 << 20) + "}\n")
    listed_problem(home, "config.json", "more than a config.json may be (1.0 MiB)")
    one_line_error(labkit(home, "eval", "a", "--device", "cpu"), "config.json", "more than a config.json may be")


@pytest.mark.parametrize("name", ["config.json", "card.json", "tokenizer.json"])
def test_json_nested_100000_levels_deep(home: Path, name: str) -> None:
    (home / "runs" / "a" / name).write_text(DEEP)
    if name != "tokenizer.json":
        listed_problem(home, name, "levels deep")
    commands = [RESUME] + ([("eval", "a", "--device", "cpu"), ("generate", "a", "--device", "cpu")]
                           if name != "card.json" else [])
    for command in commands:
        one_line_error(labkit(home, *command), name, "nested more than 64 levels deep")


def test_a_deep_metrics_line_is_skipped_by_readers_and_dropped_on_resume(home: Path) -> None:
    run = RunDir(home / "runs" / "a")
    run.metrics_path.write_text(run.metrics_path.read_text() + DEEP + "\n")
    listed_problem(home)  # no problem to report: the line is skipped
    resumed = labkit(home, *RESUME)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    assert DEEP not in run.metrics_path.read_text()
    assert [r["step"] for r in read_metrics(run.metrics_path) if "loss" in r] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_a_prompt_file_that_is_no_file(home: Path, target: str) -> None:
    if target == "fifo":
        os.mkfifo(home / "fifo")
    one_line_error(labkit(home, "generate", "a", "--prompt-file", target, "--device", "cpu"), "prompt file",
                   "not a file")


def test_a_prompt_on_stdin_that_never_ends(home: Path) -> None:
    with open("/dev/zero", "rb") as zero:
        one_line_error(labkit(home, "generate", "a", "--prompt-file", "-", "--device", "cpu", stdin=zero),
                       "the prompt on stdin is longer than 16 MiB")


@pytest.mark.parametrize("flags, words", [
    (("--epochs", "nan"), ("labkit pretrain: error: argument --epochs", "not a finite number")),
    (("--epochs", "-1"), ("argument --epochs", "out of range")),
    (("--seed", "1180591620717411303424"), ("argument --seed", "out of range")),
    (("--name", "n" * 300), ("invalid run name", "300 bytes long")),
])
def test_flag_values_that_are_no_settings(home: Path, flags: tuple[str, ...], words: tuple[str, ...]) -> None:
    before = snapshot(home)
    one_line_error(labkit(home, "pretrain", "--corpus", "synthetic", "--no-progress", *flags), *words)
    assert snapshot(home) == before
