"""Two writers on one run, and readers beside a writer, with real `labkit pretrain` processes.

Two `--name same` started together, and two `--resume` started together: one trains, the other is
refused in one line that names the first one's process id, and the run that comes out is whole:
every step logged once, in order. A reader tailing metrics.jsonl while a run writes it sees whole
JSON lines only, steps that only go up; `labkit runs` works meanwhile; removing the run (what a
notebook does before writing it again) is refused while it is written. A writer killed with SIGKILL
leaves no stale lock: the next `--resume` goes ahead at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from labkit.errors import RunError
from labkit.notebook import Lab
from labkit.runs import RunDir, remove_run

STEPS = 200
COMMON = ["--preset", "tiny", "--corpus", "synthetic", "--eval-every", "50", "--log-every", "1",
          "--eval-tokens", "1000", "--no-progress"]


def spawn(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "labkit", "pretrain", *args], cwd=cwd,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def loss_steps(run: RunDir) -> list[int]:
    lines = run.metrics_path.read_bytes().split(b"\n")
    assert lines[-1] == b"", "a torn last line"
    return [r["step"] for r in map(json.loads, lines[:-1]) if "loss" in r]


def one_trains_one_is_refused(first: subprocess.Popen, second: subprocess.Popen) -> str:
    """Wait for both; exactly one succeeds, the other's one line names the winner's process."""
    done = {proc: proc.communicate(timeout=900) for proc in (first, second)}
    assert sorted(proc.returncode for proc in done) == [0, 2], {p.returncode: err[-2000:] for p, (_, err) in done.items()}
    winner, loser = (first, second) if first.returncode == 0 else (second, first)
    lines = done[loser][1].strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done[loser][1], done[loser][1]
    assert f"is being written by process {winner.pid} (labkit pretrain " in lines[0], lines[0]
    assert lines[0].startswith("labkit: error: ") and lines[0].endswith("let it finish, or stop it, then try again")
    return lines[0]


@pytest.mark.slow
def test_two_new_runs_with_one_name_started_together(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "runs" / "same")
    args = [*COMMON, "--name", "same", "--steps", str(STEPS)]
    line = one_trains_one_is_refused(spawn(tmp_path, *args), spawn(tmp_path, *args))
    assert json.loads(run.card_path.read_text())["status"] == "finished"
    assert loss_steps(run) == list(range(1, STEPS + 1))
    assert [p.name for p in run.root.iterdir() if p.name.startswith(".")] == []  # no lock or temporary file left
    print(f"\n{line}")


@pytest.mark.slow
def test_two_resumes_started_together(tmp_path: Path) -> None:
    first = spawn(tmp_path, *COMMON, "--name", "r", "--steps", "50")
    assert first.wait(timeout=600) == 0, first.stderr.read()
    resume = ["--name", "r", "--resume", "--steps", str(STEPS), "--no-progress"]
    one_trains_one_is_refused(spawn(tmp_path, *resume), spawn(tmp_path, *resume))
    run = RunDir(tmp_path / "runs" / "r")
    assert json.loads(run.card_path.read_text())["status"] == "finished"
    assert loss_steps(run) == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_readers_beside_a_writer_and_no_stale_lock_after_a_kill(tmp_path: Path) -> None:
    lab = Lab("02", "smoke", torch.device("cpu"), tmp_path / "runs", None, None)
    run = RunDir(lab.run_path("tail", fresh=False))
    writer = spawn(tmp_path, *COMMON, "--name", run.name, "--steps", "5000")  # killed long before the end
    reads, torn, seen, data = 0, 0, [], b""
    refused, lister = "", None
    while writer.poll() is None:
        try:
            now = run.metrics_path.read_bytes()
        except FileNotFoundError:
            time.sleep(0.005)
            continue
        assert now.startswith(data), "the metrics file lost what a reader had seen"
        data, reads = now, reads + 1
        lines = now.split(b"\n")
        torn += lines[-1] != b""
        records = [json.loads(line) for line in lines[:-1]]  # every line before the last newline is whole
        steps = [r["step"] for r in records if "loss" in r]
        assert steps == list(range(1, len(steps) + 1)) and steps[:len(seen)] == seen
        seen = steps
        if len(seen) > 20 and not refused:  # mid-run: removing it is refused, listing it works
            with pytest.raises(RunError) as error:
                lab.run_path("tail")
            refused = str(error.value)
            lister = subprocess.Popen([sys.executable, "-m", "labkit", "runs"], cwd=tmp_path, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if lister and lister.poll() is not None and len(seen) > 60:
            writer.send_signal(signal.SIGKILL)  # the lock goes with the process
            writer.wait(timeout=30)
        time.sleep(0.002)
    assert writer.returncode == -signal.SIGKILL, writer.stderr.read()
    assert f"is being written by process {writer.pid}" in refused, refused
    listed, _ = lister.communicate()
    assert lister.returncode == 0 and run.name in listed and "running" in listed, listed
    assert reads >= 30, reads
    done = int(run.latest_checkpoint().name.removeprefix("step-"))
    resumed = subprocess.run([sys.executable, "-m", "labkit", "pretrain", "--name", run.name, "--resume",
                              "--steps", str(done + 20), "--no-progress"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(from step {done})" in resumed.stdout
    assert loss_steps(run) == list(range(1, done + 21))
    remove_run(run)  # nobody writes it now
    assert not run.root.exists()
    print(f"\nreader: {reads} reads while the run wrote, {torn} saw a line still being written; "
          f"removal while written: {refused}")
