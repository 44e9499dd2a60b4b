"""Crash safety: real `labkit pretrain` processes killed with SIGKILL at random moments.

One run is started, killed, resumed, killed again, and so on: the first kill lands before the
first checkpoint exists, about half of the others the moment a checkpoint folder is being
written, the rest at random times (while Python starts, data loads, metrics are cut back,
training or evaluating). After every kill the latest checkpoint loads, metrics.jsonl holds
whole JSON lines with no step logged twice, and the next `--resume` says where it continues
from. At the end the run finishes, and its loss curve is, step for step, the one an
uninterrupted run of the same command logs.

Then the two failures a process lives through: a full disk and a read-only run directory, made
for real with a small tmpfs (remounted read-only). Mounting needs root (CI runs as root); where it
is not permitted these tests are skipped, and the run's warnings summary says so.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest

from labkit.errors import RunError
from labkit.models import build_model, config_from_dict
from labkit.runs import RunDir, load_state, load_weights

STEPS = 600
EVAL_EVERY = 4
COMMON = ["--preset", "tiny", "--corpus", "synthetic", "--eval-every", str(EVAL_EVERY),
          "--log-every", "1", "--eval-tokens", "2000", "--no-progress"]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def spawn(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "labkit", "pretrain", *args], cwd=cwd,
                            env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def labkit(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit", *args], cwd=cwd, env=environment(),
                          capture_output=True, text=True, timeout=180)


def mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def temporary_folders(run: RunDir) -> list[str]:
    try:
        return [e.name for e in os.scandir(run.checkpoints_dir) if e.name.startswith(".tmp-")]
    except FileNotFoundError:
        return []


def kill_when(proc: subprocess.Popen, ready, deadline_s: float = 60) -> bool:
    """Poll every half millisecond until `ready()` (or the deadline), then SIGKILL. Whether the
    kill came when intended: `ready()` held and the process was still running."""
    end = time.monotonic() + deadline_s
    landed = False
    while proc.poll() is None and time.monotonic() < end:
        if ready():
            landed = True
            break
        time.sleep(0.0005)
    landed = landed and proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return landed


def whole_records(path: Path) -> tuple[list[dict], bool]:
    """metrics.jsonl's records, and whether a torn last line follows them. Every line before
    the last newline must be one whole JSON object."""
    if not path.exists():
        return [], False
    pieces = path.read_bytes().split(b"\n")
    records = [json.loads(line) for line in pieces[:-1]]
    assert all(isinstance(r, dict) for r in records)
    return records, pieces[-1] != b""


def assert_no_step_twice(records: list[dict]) -> None:
    for key in ("loss", "val_loss", "test_loss"):
        steps = [r["step"] for r in records if key in r]
        assert all(a < b for a, b in zip(steps, steps[1:])), (key, steps)


def checkpoint_step(run: RunDir) -> int:
    """Load the latest checkpoint's weights and state; its step (0 when there is none)."""
    latest = run.latest_checkpoint()
    if latest is None:
        return 0
    config = json.loads(run.config_path.read_text())
    load_weights(build_model(config_from_dict(config["model"])), latest / "model.safetensors")
    state = load_state(latest / "state.pt")
    assert state["step"] == int(latest.name.removeprefix("step-"))
    return state["step"]


class After:
    """ready() once `started()` has held for `delay` seconds."""

    def __init__(self, started, delay: float):
        self.started, self.delay, self.since = started, delay, None

    def __call__(self) -> bool:
        if self.since is None and self.started():
            self.since = time.monotonic()
        return self.since is not None and time.monotonic() - self.since >= self.delay


class NthCheckpoint:
    """ready() while the n-th checkpoint folder written since `started()` is still temporary
    (stale temporary folders are removed before the card says "running")."""

    def __init__(self, run: RunDir, started, n: int):
        self.run, self.started, self.n, self.seen = run, started, n, set()

    def __call__(self) -> bool:
        if not self.started():
            return False
        now = {name for name in temporary_folders(self.run) if not name.startswith(".tmp-old-")}
        self.seen |= now
        return len(self.seen) >= self.n and bool(now)


def kill_plan(n: int) -> list[tuple[str, float]]:
    """(mode, delay) for each kill after the first: random, and the same every time."""
    rng = random.Random(20261128)
    plan = []
    for _ in range(n):
        mode = rng.choices(["anytime", "training", "checkpoint"], [1, 1, 2])[0]
        plan.append((mode, rng.uniform(0.05, 3.0) if mode == "anytime" else rng.uniform(0.0, 0.3)
                     if mode == "training" else rng.randint(1, 4)))
    return plan


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_run(tmp_path: Path) -> None:
    plan = kill_plan(23)
    planned = Counter(mode for mode, _ in plan)
    assert planned == {"anytime": 6, "training": 5, "checkpoint": 12}, planned  # the seed's plan
    run = RunDir(tmp_path / "runs" / "crash")
    card = run.card_path
    reference = spawn(tmp_path, *COMMON, "--name", "straight", "--steps", str(STEPS))

    # The first kill: as soon as training starts, before any checkpoint.
    assert kill_when(spawn(tmp_path, *COMMON, "--name", "crash", "--steps", str(STEPS)), card.exists)
    assert run.exists() and run.latest_checkpoint() is None, "the first kill came too late"
    landed, left_temporary, checked, torn_lines, from_zero, last_step, log = Counter(), 0, 0, 0, 0, 0, []
    for mode, delay in plan:
        # What the last kill left: a loadable checkpoint no older than before, whole lines.
        step = checkpoint_step(run)
        assert step >= last_step, f"the latest checkpoint went back from {last_step} to {step}"
        last_step = step
        records, torn = whole_records(run.metrics_path)
        torn_lines += torn
        assert_no_step_twice(records)

        before = mtime(card)  # a resumed process rewrites the card ("running") to start

        def started(before=before):
            return mtime(card) != before

        proc = spawn(tmp_path, "--name", "crash", "--resume")
        if mode == "anytime":
            ready = After(lambda: True, delay)
        elif mode == "training":
            ready = After(started, delay)
        else:  # while the n-th checkpoint folder of this process is being written
            ready = NthCheckpoint(run, started, delay)
        landed[mode] += kill_when(proc, ready)
        left_temporary += mode == "checkpoint" and bool(temporary_folders(run))
        out, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, f"it ended by itself:\n{out}\n{err}"
        assert "Traceback" not in err, err
        # Where it continues from: every process says it before it trains, so each one killed in
        # training or in a checkpoint has said it, and said it right; only one killed at a random
        # moment may have been killed before a word (while Python started).
        expected = f"(from step {step})" if step else "from step 0: it was stopped before its first checkpoint"
        if mode != "anytime" or started() or out:
            assert expected in out, (mode, out, step)
            checked += 1
            from_zero += not step
        else:
            assert out == "", out
        log.append(f"{mode}:{delay:.2f}@{step}" if mode != "checkpoint" else f"ckpt:{delay}@{step}")

    step = checkpoint_step(run)
    assert step >= last_step
    final = labkit(tmp_path, "pretrain", "--name", "crash", "--resume", "--no-progress")
    assert final.returncode == 0, final.stderr
    assert f"resuming run: {run.root.relative_to(tmp_path)} (from step {step})" in final.stdout, final.stdout
    _, err = reference.communicate(timeout=180)
    assert reference.returncode == 0, err

    # The run is whole: every step once, and the losses of the uninterrupted run.
    assert json.loads(card.read_text())["status"] == "finished"
    records, torn = whole_records(run.metrics_path)
    assert not torn and run.metrics_path.read_bytes().endswith(b"\n")
    assert [r["step"] for r in records if "loss" in r] == list(range(1, STEPS + 1))
    assert [r["step"] for r in records if "val_loss" in r] == list(range(EVAL_EVERY, STEPS + 1,
                                                                         EVAL_EVERY))
    assert [r["step"] for r in records if "test_loss" in r] == [STEPS]
    straight, _ = whole_records(tmp_path / "runs" / "straight" / "metrics.jsonl")
    a = [r["loss"] for r in straight if "loss" in r]
    b = [r["loss"] for r in records if "loss" in r]
    worst = max(abs(x - y) for x, y in zip(a, b))
    assert len(a) == len(b) == STEPS and worst < 1e-6, worst
    assert not temporary_folders(run) and not list(run.root.glob(".*.tmp"))
    print(f"\ncrash: {1 + len(plan)} SIGKILLs survived; landed as intended: {dict(landed)} of "
          f"{dict(planned)}; {left_temporary} left a half-written checkpoint folder; {checked} said where they "
          f"continue from ({from_zero} from step 0); {torn_lines} torn metrics lines cut; the finished run's "
          f"{STEPS} losses vs an uninterrupted run: max |diff| {worst:.1e}\nkills (mode:delay s, or "
          f"ckpt:n-th write, @ the step resumed from): {' '.join(log)}")
    # Every kill came where it was meant to: after the given time, during training, or while this
    # process's n-th checkpoint folder was still temporary; most of those left that folder behind.
    assert landed == planned, (landed, planned)
    assert checked >= planned["training"] + planned["checkpoint"], checked
    assert left_temporary >= planned["checkpoint"] // 2, left_temporary


# --- a full disk, a read-only run directory -----------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path):
    """A 6 MB tmpfs at tmp_path/disk: a file system that can really fill up or turn read-only."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        skip_loudly("no mount command: a full or read-only file system cannot be made here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        skip_loudly(f"mounting a tmpfs is not permitted here ({done.stderr.strip()}; it needs root, as CI "
                    "runs): a full disk and a read-only file system cannot be made for real")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def skip_loudly(reason: str) -> None:
    """Skip, and say so in the run's warnings summary too: these tests must not go quietly unrun."""
    warnings.warn(f"NOT TESTED: the full-disk and read-only tests were skipped: {reason}", stacklevel=2)
    pytest.skip(reason)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill the file system to the last byte, then free `leave` bytes."""
    filler = disk / f"filler-{len(list(disk.glob('filler-*')))}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
        if leave:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)


def unfill(disk: Path) -> None:
    for filler in disk.glob("filler-*"):
        filler.unlink()


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("labkit: error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def assert_intact(run: RunDir, step: int) -> None:
    assert run.latest_checkpoint().name == f"step-{step:08d}"
    assert checkpoint_step(run) == step
    assert not temporary_folders(run) and not list(run.root.glob(".*.tmp"))


def test_full_disk_and_read_only_run_directory(small_disk: Path, tmp_path: Path) -> None:
    runs = small_disk / "runs"
    resume = ["pretrain", "--runs-dir", str(runs), "--name", "r", "--resume", "--steps", "40",
              "--no-progress"]
    first = labkit(tmp_path, "pretrain", *COMMON, "--runs-dir", str(runs), "--name", "r",
                   "--steps", "8")
    assert first.returncode == 0, first.stderr
    run = RunDir(runs / "r")
    assert_intact(run, 8)
    metrics = run.metrics_path.read_bytes()
    lines = []

    # Full to the last byte: resuming fails at its first write, and says so in one line.
    fill(small_disk)
    lines.append(one_line_error(labkit(tmp_path, *resume), "disk is full",
                                "step-00000008, is intact", "--resume"))
    assert_intact(run, 8)
    assert run.metrics_path.read_bytes() == metrics

    # Room for metrics lines and the best weights but not for a checkpoint: training runs to
    # the next checkpoint, which fails whole and leaves the previous one.
    unfill(small_disk)
    checkpoint = run.latest_checkpoint()
    weights = (checkpoint / "model.safetensors").stat().st_size
    fill(small_disk, leave=weights + 64 * 1024)
    lines.append(one_line_error(labkit(tmp_path, *resume), "checkpoints/step-00000012",
                                "disk is full", "step-00000008, is intact"))
    assert_intact(run, 8)
    records, torn = whole_records(run.metrics_path)
    assert not torn and [r["step"] for r in records if "loss" in r][-1] == 12
    assert_no_step_twice(records)

    # Read-only: the same; after remounting read-write the run resumes and finishes whole.
    unfill(small_disk)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        lines.append(one_line_error(labkit(tmp_path, *resume), "read-only",
                                    "step-00000008, is intact"))
        assert_intact(run, 8)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    done = labkit(tmp_path, *resume)
    assert done.returncode == 0, done.stderr
    records, _ = whole_records(run.metrics_path)
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 41))
    assert_no_step_twice(records)
    print("\n" + "\n".join(lines))


def test_in_process_write_errors_are_run_errors(small_disk: Path) -> None:
    """The library path: a checkpoint that meets a full disk raises RunError, leaves no
    temporary folder, and the previous checkpoint loads."""
    from labkit.data import DataConfig
    from labkit.models import RNNConfig
    from labkit.train import Callback, TrainConfig
    from labkit.train.pretrain import pretrain

    class FillAtSecondEval(Callback):
        def on_eval(self, trainer, record):
            if record["step"] == 4:
                weights = (small_disk / "run" / "model.safetensors").stat().st_size
                fill(small_disk, leave=weights + 16 * 1024)

    with pytest.raises(RunError, match="disk is full") as error:
        pretrain(RNNConfig(d_embed=64, d_hidden=64, n_layers=1, dropout=0.0),
                 TrainConfig(max_steps=20, eval_every=2, log_every=1, batch_size=4, seq_len=8,
                             device="cpu"),
                 DataConfig(corpus="synthetic", eval_tokens=500), small_disk / "run",
                 callbacks=[FillAtSecondEval()])
    assert "step-00000004" in str(error.value) and "step-00000002, is intact" in str(error.value)
    assert_intact(RunDir(small_disk / "run"), 2)


# --- the moments a kill can leave, made by hand (fast, in-process) ------------------------------
def tiny_run(root: Path) -> RunDir:
    from labkit.data import DataConfig
    from labkit.models import RNNConfig
    from labkit.train import TrainConfig
    from labkit.train.pretrain import pretrain

    pretrain(RNNConfig(d_embed=16, d_hidden=16, n_layers=1, dropout=0.0),
             TrainConfig(max_steps=4, eval_every=2, log_every=1, batch_size=4, seq_len=8,
                         device="cpu"),
             DataConfig(corpus="synthetic", train_tokens=3000, eval_tokens=300), root)
    return RunDir(root)


@pytest.mark.parametrize("killed", ["before the card", "before the test record"])
def test_a_kill_after_the_last_checkpoint_logs_nothing_twice(tmp_path: Path, killed: str) -> None:
    from labkit.train.pretrain import resume

    run = tiny_run(tmp_path / "run")
    card = run.read_card()
    run.write_card({**card, "status": "running"})  # the final card was never written
    if killed == "before the test record":
        lines = run.metrics_path.read_text().splitlines(keepends=True)
        run.metrics_path.write_text("".join(line for line in lines if "test_loss" not in line))
    assert resume(run.root)["status"] == "finished"
    records, torn = whole_records(run.metrics_path)
    assert not torn
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4]
    assert [r["step"] for r in records if "test_loss" in r] == [4]


def test_what_a_killed_writer_leaves_is_ignored_then_removed(tmp_path: Path) -> None:
    run = tiny_run(tmp_path / "run")
    half = run.checkpoints_dir / "step-00000009"  # a folder without its weights
    half.mkdir()
    shutil.copy(run.latest_checkpoint() / "state.pt", half / "state.pt")
    (run.checkpoints_dir / ".tmp-abc").mkdir()
    (run.checkpoints_dir / ".tmp-old-step-00000002").mkdir()
    (run.root / ".card.json.x1y2.tmp").write_text("{")
    assert run.latest_checkpoint().name == "step-00000004"
    from labkit.train.pretrain import resume

    resume(run.root, overrides={"max_steps": 6})
    assert not temporary_folders(run) and not list(run.root.glob(".*.tmp"))
    assert run.latest_checkpoint().name == "step-00000006"


@pytest.mark.slow
def test_sigkill_during_fine_tuning_checkpoints_never_loses_the_run(tmp_path: Path) -> None:
    """`labkit finetune` (the same Trainer) killed again and again while it writes checkpoints:
    each time the latest checkpoint loads, and the finished run logs the uninterrupted losses."""
    done = labkit(tmp_path, "pretrain", *COMMON, "--name", "lm", "--steps", "8")
    assert done.returncode == 0, done.stderr
    steps = 150
    args = ["--task", "number", "--max-steps", str(steps), "--eval-every", "3", "--val-size", "64",
            "--batch-size", "16", "--patience", "1000", "--lm-steps", "0", "--no-progress"]

    def finetune(*more: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "labkit", "finetune", *more], cwd=tmp_path,
                                env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    reference = finetune("lm", *args, "--name", "straight")
    run = RunDir(tmp_path / "runs" / "ft")
    kill_when(finetune("lm", *args, "--name", "ft"), run.card_path.exists)
    kills, landed, in_checkpoint, last = 1, 0, 0, 0
    while kills < 8:
        step = checkpoint_step(run)
        assert step >= last
        last = step
        in_checkpoint += bool(temporary_folders(run))
        before = mtime(run.card_path)
        proc = finetune("--name", "ft", "--resume", "--no-progress")
        landed += kill_when(proc, NthCheckpoint(run, lambda before=before: mtime(run.card_path) != before,
                                                1 + kills % 3))
        kills += 1
        _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err
        assert "Traceback" not in err, err
    in_checkpoint += bool(temporary_folders(run))
    final = labkit(tmp_path, "finetune", "--name", "ft", "--resume", "--no-progress")
    assert final.returncode == 0, final.stderr
    _, err = reference.communicate(timeout=180)
    assert reference.returncode == 0, err
    records, torn = whole_records(run.metrics_path)
    assert not torn
    assert [r["step"] for r in records if "loss" in r] == [1, *range(10, steps + 1, 10)]
    straight, _ = whole_records(tmp_path / "runs" / "straight" / "metrics.jsonl")
    a = [r["loss"] for r in straight if "loss" in r]
    b = [r["loss"] for r in records if "loss" in r]
    assert len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) < 1e-6
    assert json.loads(run.card_path.read_text())["accuracy"] == \
        json.loads((tmp_path / "runs" / "straight" / "card.json").read_text())["accuracy"]
    assert landed == kills - 1, f"only {landed} of {kills - 1} kills came while a checkpoint was written"
    assert in_checkpoint >= 2, f"only {in_checkpoint} kills landed in a checkpoint write"
