"""The second round of hostile input, on the surfaces added since the first (import, export, bench,
the demo, fine-tuning's new steps, the app's pages): no input writes outside the folder labkit was
given, no small file or flag exhausts the memory, no mistake ends in a traceback.

Each call runs in a real process whose memory is capped (RLIMIT_DATA, 4 GiB: a blow-up fails the
test, not the machine) and under a timeout; a refusal is one line on stderr and exit code 2.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from labkit.runs import RunDir

CAP = 4 << 30  # bytes of memory a labkit process may take here
LONG = "x" * 300  # a file name longer than any file system allows (255 bytes)
DEEP_PATH = "d/" * 2100  # a path longer than PATH_MAX (4,096)
SEEN: Counter[str] = Counter()


def capped() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (CAP, CAP))


def labkit(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LABKIT_OFFLINE": "1", "LABKIT_CACHE": str(home / "cache")}
    SEEN["calls"] += 1
    return subprocess.run([sys.executable, "-m", "labkit", *args], cwd=home, env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=capped)


def refused(result: subprocess.CompletedProcess, *words: str, code: int = 2) -> str:
    """A clean refusal: exit `code` (2: a mistake; 1: training stopped), one line on stderr holding
    `words`, no traceback, no memory error."""
    err = result.stderr.strip()
    assert "Traceback" not in err and "MemoryError" not in err and "can't allocate" not in err, err[-2000:]
    assert result.returncode == code, (result.args, result.returncode, err[-1000:])
    line = err.splitlines()[-1]
    assert len(err.splitlines()) == 1 or not err.splitlines()[0].startswith(" "), err
    for word in words:
        assert word in line, (word, line)
    return line


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder` (links not followed): its kind, size and bytes."""
    out = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        data = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
        out[str(path.relative_to(folder))] = (stat.S_IFMT(info.st_mode), info.st_size, data)
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny runs (an LSTM, a Transformer) and a classifier, on the generated corpus."""
    home = tmp_path_factory.mktemp("surfaces")
    for args in (("pretrain", "--preset", "tiny", "--corpus", "synthetic", "--steps", "4", "--eval-every", "2",
                  "--name", "lm", "--no-progress"),
                 ("pretrain", "--preset", "tiny", "--model", "transformer", "--corpus", "synthetic", "--steps", "4",
                  "--eval-every", "2", "--name", "tf", "--no-progress"),
                 ("finetune", "lm", "--task", "number", "--max-steps", "2", "--lm-steps", "0", "--name", "cls",
                  "--no-progress")):
        done = labkit(home, *args)
        assert done.returncode == 0, done.stderr
    return home


@pytest.fixture
def home(source: Path, tmp_path: Path) -> Path:
    shutil.copytree(source / "runs", tmp_path / "runs", symlinks=True)
    return tmp_path


@pytest.fixture(scope="module", autouse=True)
def count():
    yield
    print(f"\nhostile surfaces: {SEEN['calls']} labkit processes, each capped at {CAP >> 30} GiB")


# --- writes outside the folder given ----------------------------------------------------------------
def test_bench_never_replaces_what_is_not_a_file(home: Path) -> None:
    fifo = home / "results.fifo"
    os.mkfifo(fifo)
    targets = [fifo, home / "a-folder"]
    (home / "a-folder").mkdir()
    if os.geteuid() == 0:  # a twin of /dev/null, as a root user's --out /dev/null would be
        os.mknod(home / "null-twin", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        targets.append(home / "null-twin")
    for target in targets:
        before = target.lstat()
        refused(labkit(home, "bench", "--out", str(target), "--budget", "1"), "not a file")
        after = target.lstat()
        assert (stat.S_IFMT(after.st_mode), after.st_ino) == (stat.S_IFMT(before.st_mode), before.st_ino)


def test_demo_names_stay_plain_names(home: Path) -> None:
    before = snapshot(home)
    for names in (["../x", "y"], [str(home / "abs"), "y"], ["a", "a"], [LONG, "y"]):
        refused(labkit(home, "demo", "runs", "--corpus", "synthetic", "--names", *names, "--steps", "1"))
    assert snapshot(home) == before


def test_resume_never_writes_through_a_hard_linked_metrics_file(home: Path) -> None:
    run = home / "runs" / "lm"
    outside = home / "my-notes.jsonl"
    os.link(run / "metrics.jsonl", outside)
    with open(outside, "ab") as f:
        f.write(b'{"step": 3, "loss": 1.0')  # a torn last line: resume would cut it in place
    kept = outside.read_bytes()
    refused(labkit(home, "pretrain", "--name", "lm", "--resume", "--steps", "6", "--no-progress"), "names")
    assert outside.read_bytes() == kept


def test_a_new_run_never_goes_into_a_folder_of_other_files(home: Path) -> None:
    mine = home / "runs" / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("buy milk\n")
    before = snapshot(home / "runs")
    refused(labkit(home, "pretrain", "--corpus", "synthetic", "--name", "notes", "--steps", "1", "--no-progress"),
            "holds files of its own")
    refused(labkit(home, "finetune", "lm", "--task", "number", "--name", "notes", "--max-steps", "1"),
            "holds files of its own")
    assert snapshot(home / "runs") == before  # not even a lock file


def test_export_stays_out_of_runs_and_writes_readable_files(home: Path) -> None:
    refused(labkit(home, "export", "runs/tf", "--format", "hf", "runs/tf/hf"), "inside the run")
    done = labkit(home, "export", "runs/tf", "--format", "hf", "out-hf")
    assert done.returncode == 0, done.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (home / "out-hf").iterdir()}
    assert len(set(modes.values())) == 1, modes  # the weights as readable as the rest


# --- memory that a small file or flag could exhaust ----------------------------------------------------
def zip_bomb(path: Path, inflated: int = 2 << 30) -> None:
    """A torch-format archive whose tensor data declares `inflated` bytes, stored in a few MB."""
    buffer = io.BytesIO()
    torch.save({"step": 1, "w": torch.zeros(4)}, buffer)
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data/0"):
                with dst.open(info.filename, "w", force_zip64=True) as f:
                    chunk = b"\0" * (64 << 20)
                    for _ in range(inflated // len(chunk)):
                        f.write(chunk)
            else:
                dst.writestr(info.filename, data)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.pt"
    zip_bomb(path)
    assert path.stat().st_size < 16 << 20
    return path


def test_zip_bombs_are_refused_unread(home: Path, bomb: Path) -> None:
    run = RunDir(home / "runs" / "lm")
    shutil.copy(bomb, run.latest_checkpoint() / "state.pt")
    refused(labkit(home, "pretrain", "--name", "lm", "--resume", "--steps", "8", "--no-progress"), "zip bomb")
    nanogpt = home / "nano"
    nanogpt.mkdir()
    shutil.copy(bomb, nanogpt / "ckpt.pt")
    refused(labkit(home, "import", str(nanogpt / "ckpt.pt"), "--tokenizer", "runs/lm/tokenizer.json"), "zip bomb")
    hf = home / "hf"
    assert labkit(home, "export", "runs/tf", "--format", "hf", str(hf)).returncode == 0
    (hf / "model.safetensors").unlink()
    shutil.copy(bomb, hf / "pytorch_model.bin")
    refused(labkit(home, "import", str(hf)), "zip bomb")


def test_size_fields_are_checked_against_the_tensors_first(home: Path) -> None:
    hf = home / "hf"
    assert labkit(home, "export", "runs/tf", "--format", "hf", str(hf)).returncode == 0
    config = json.loads((hf / "config.json").read_text())
    for field, value in (("vocab_size", 10**12), ("n_positions", 10**9), ("n_layer", 10**5)):
        (hf / "config.json").write_text(json.dumps(config | {field: value}))
        refused(labkit(home, "import", str(hf), "--name", "big"), "do not belong together")
    (hf / "config.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    refused(labkit(home, "import", str(hf), "--name", "deep"), "nested")
    os.truncate(hf / "config.json", 3 << 30)  # sparse: no disk used
    refused(labkit(home, "import", str(hf), "--name", "huge"), "config.json")
    assert not (home / "runs" / "big").exists() and not (home / "runs" / "deep").exists()


def test_flags_that_would_allocate_without_end(home: Path) -> None:
    refused(labkit(home, "finetune", "lm", "--task", "number", "--val-size", "1000000000"), "--val-size")
    refused(labkit(home, "pretrain", "--corpus", "synthetic", "--tokenizer", "bpe", "--vocab-size", "1000000000",
                   "--name", "bpe"), "--vocab-size")
    assert not (home / "runs" / "bpe").exists()
    corpus = home / "big.txt"
    with open(corpus, "wb") as f:
        f.truncate(3 << 30)
    refused(labkit(home, "pretrain", "--corpus", str(corpus), "--name", "big", "--steps", "1"), "GiB")
    assert not (home / "runs" / "big").exists()


# --- mistakes that ended in a traceback ----------------------------------------------------------------
def test_paths_longer_than_the_system_allows(home: Path) -> None:
    for args in (("eval", LONG), ("eval", DEEP_PATH), ("runs", "--runs-dir", DEEP_PATH),
                 ("pretrain", "--corpus", DEEP_PATH + "c.txt", "--steps", "1"),
                 ("pretrain", "--data", DEEP_PATH, "--steps", "1"), ("pretrain", "--init-from", LONG, "--steps", "1"),
                 ("import", DEEP_PATH), ("import", "runs/tf", "--tokenizer", DEEP_PATH), ("demo", DEEP_PATH),
                 ("bench", "--out", DEEP_PATH + "b.json", "--budget", "1"), ("export", "runs/tf", "--format", "hf",
                                                                            DEEP_PATH)):
        refused(labkit(home, *args))


def test_odd_values_and_damaged_files_of_fine_tuning(home: Path) -> None:
    for value in ("2", "-1", "inf", "nan"):
        refused(labkit(home, "finetune", "lm", "--task", "number", "--dropout", value), "--dropout")
    config = RunDir(home / "runs" / "cls").load_config()
    RunDir(home / "runs" / "cls").save_config({k: v for k, v in config.items() if k != "format_version"}
                                              | {"labels": 3, "finetune": {"max_len": "long"}})
    refused(labkit(home, "predict", "cls", "a fine film"), "damaged")


def test_resume_on_damaged_but_plausible_files(home: Path) -> None:
    def fresh() -> RunDir:
        shutil.rmtree(home / "runs" / "lm")
        shutil.copytree(home / "kept" / "lm", home / "runs" / "lm")
        return RunDir(home / "runs" / "lm")

    shutil.copytree(home / "runs", home / "kept")
    run = fresh()
    with open(run.metrics_path, "a") as f:
        f.write('{"step": "three", "loss": 1.0}\n')
    done = labkit(home, "pretrain", "--name", "lm", "--resume", "--steps", "6", "--no-progress")
    assert done.returncode == 0, done.stderr  # a damaged record is dropped, the run goes on
    run = fresh()
    state = torch.load(run.latest_checkpoint() / "state.pt", weights_only=True)
    torch.save(state | {"step": float("inf")}, run.latest_checkpoint() / "state.pt")
    refused(labkit(home, "pretrain", "--name", "lm", "--resume", "--steps", "6", "--no-progress"), "does not match")
    run = fresh()
    shutil.copytree(run.latest_checkpoint(), run.checkpoints_dir / "step-zzz")
    done = labkit(home, "pretrain", "--name", "lm", "--resume", "--steps", "6", "--no-progress")
    assert done.returncode == 0, done.stderr  # step-zzz is no checkpoint: the real latest one is used
    loop = home / "runs" / "loop"
    loop.symlink_to(loop)
    refused(labkit(home, "pretrain", "--name", "loop", "--resume", "--steps", "6"))
    refused(labkit(home, "eval", "runs/loop"))


def test_silently_accepted_values_are_refused(home: Path) -> None:
    for args, words in ((("pretrain", "--corpus", "synthetic", "--hidden", "0"), "--hidden"),
                        (("pretrain", "--corpus", "synthetic", "--train-tokens", "-1"), "--train-tokens"),
                        (("pretrain", "--corpus", "synthetic", "--eval-tokens", "-1"), "--eval-tokens"),
                        (("pretrain", "--preset", ""), "--preset"), (("pretrain", "--name", ""), "--name"),
                        (("pretrain", "--tensorboard", ""), "--tensorboard"),
                        (("generate", "lm", "--prompt-file", ""), "--prompt-file"),
                        (("pretrain", "--init-from", ""), "--init-from"),
                        (("bench", "--target-ppl", "nan", "--budget", "1"), "--target-ppl"),
                        (("predict", "cls", "x", "--device", "meta"), "device")):
        refused(labkit(home, *args), words)


def test_misleading_messages_say_what_is_wrong(home: Path) -> None:
    assert "holds no labkit runs" in refused(labkit(home, "runs", "--runs-dir", "/proc"))
    run = RunDir(home / "runs" / "lm")
    config = run.config_path.read_text()
    run.config_path.write_text(config.replace('"format_version": 1', '"format_version": "1"'))
    assert "damaged" in refused(labkit(home, "eval", "lm"))
    run.config_path.write_text(config)
    from safetensors.torch import load_file, save_file
    weights = load_file(run.weights_path)
    save_file({k: v.to(torch.int64) for k, v in weights.items()}, run.weights_path)
    assert "whole numbers" in refused(labkit(home, "eval", "lm"))
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, run.latest_checkpoint() / "model.safetensors")
    assert "not finite" in refused(labkit(home, "pretrain", "--name", "lm", "--resume", "--steps", "8", "--no-progress"),
                                   code=1)  # training stops (exit 1), naming the weights, not the learning rate
    run.config_path.unlink()
    os.mkfifo(run.config_path)
    assert "FIFO" in refused(labkit(home, "pretrain", "--name", "lm", "--resume", "--steps", "8", "--no-progress"))
