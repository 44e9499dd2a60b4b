"""Data-parallel training: `torchrun --nproc_per_node=2 -m labkit pretrain ...` on CPUs (gloo).

Two processes with the global batch of one must train like one process: the same losses, the
same validation, the same tokens, one metrics file written by rank 0. Tolerance: 1e-4 on the
losses (max abs difference). The two ways differ only in the order floating-point sums are
taken (each rank's mean loss and gradients, then the all-reduce average, against one mean over
the whole batch): about 1e-7 relative in fp32 per step, compounded over a few steps of AdamW.
A real mistake is far larger: a rank reading the other's rows, a gradient summed instead of
averaged or a schedule out of step moves the loss by 1e-3 or more within a few steps, even in
warm-up (checked below: training on half the batch alone is more than 10x the tolerance off).

Then: resuming across a change in the number of processes (2 -> 1, and 1 -> 2 for the RNN,
whose hidden state is split by rows), SIGTERM to torchrun (every rank stops at the same step
and rank 0 saves a checkpoint), and a diverging loss stopping every rank.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit.presets import resolve_preset

TOLERANCE = 1e-4
STEPS = 8
# fp32: the tolerance is set for fp32 sums (bf16 autocast, the default on CPUs with bf16
# instructions, rounds each product to 8 bits of mantissa and would hide nothing but blur this).
COMMON = ["--preset", "tiny", "--corpus", "synthetic", "--eval-every", "4", "--log-every", "1",
          "--eval-tokens", "2000", "--no-progress", "--precision", "fp32"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(scratch: Path) -> dict[str, str]:
    # TMPDIR: torchrun leaves a torchelastic_* folder in the temp folder of every launch
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def start(cwd: Path, *args: str, processes: int = 1, command: str = "pretrain") -> subprocess.Popen:
    """`labkit COMMAND ARGS` alone, or under torchrun with `processes` processes."""
    if processes == 1:
        head = [sys.executable, "-m", "labkit"]
    else:
        head = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "labkit"]
    scratch = cwd / ".tmp"
    scratch.mkdir(exist_ok=True)
    return subprocess.Popen([*head, command, *args], cwd=cwd, env=environment(scratch),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(*procs: subprocess.Popen, timeout: float = 240) -> list[tuple[int, str, str]]:
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results


def ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, f"exit {code}\n{out}\n{err}"
    return out


def records(run: Path) -> list[dict]:
    text = (run / "metrics.jsonl").read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def curve(run: Path, key: str = "loss") -> dict[int, float]:
    rows = [r for r in records(run) if key in r]
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), f"a step logged twice: {steps}"  # rank 0 alone writes
    return {r["step"]: r[key] for r in rows}


def card(run: Path) -> dict:
    return json.loads((run / "card.json").read_text())


def max_diff(a: dict[int, float], b: dict[int, float]) -> float:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max(abs(a[k] - b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_two_processes_train_like_one_and_resume_on_either(model: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = [*COMMON, "--model", model, "--steps", str(STEPS)]
    single, ddp, half = finish(
        start(tmp_path, *args, "--name", "single"),
        start(tmp_path, *args, "--name", "ddp", processes=2),
        start(tmp_path, *args, "--name", "half", "--batch-size", str(resolve_preset("tiny", model)["train"]["batch_size"] // 2)))
    ok(single)
    out = ok(ddp)
    ok(half)
    assert out.count("run directory:") == 1  # one copy of the output: rank 0's
    assert card(runs / "ddp")["processes"] == 2 and card(runs / "single")["processes"] == 1
    assert card(runs / "ddp")["tokens_seen"] == card(runs / "single")["tokens_seen"]
    train = max_diff(curve(runs / "single"), curve(runs / "ddp"))
    val = max_diff(curve(runs / "single", "val_loss"), curve(runs / "ddp", "val_loss"))
    test = abs(card(runs / "single")["test_loss"] - card(runs / "ddp")["test_loss"])
    norms = max_diff(curve(runs / "single", "grad_norm"), curve(runs / "ddp", "grad_norm"))
    wrong = max_diff(curve(runs / "single"), curve(runs / "half"))  # what a mistake looks like
    assert max(train, val, test) < TOLERANCE and norms < 10 * TOLERANCE
    assert wrong > 10 * TOLERANCE
    # Only rank 0 wrote, and only what a single process writes.
    assert sorted(p.name for p in (runs / "ddp").iterdir()) == \
        sorted(p.name for p in (runs / "single").iterdir())

    # Resume 2 -> 1 (and, for the RNN, whose state is split by rows, 1 -> 2).
    more = ["--resume", "--steps", str(STEPS + 4), "--no-progress"]
    shutil.copytree(runs / "single", runs / "one-to-two")
    procs = [start(tmp_path, "--name", "single", *more), start(tmp_path, "--name", "ddp", *more)]
    if model == "lstm":
        procs.append(start(tmp_path, "--name", "one-to-two", *more, processes=2))
    for result in finish(*procs):
        ok(result)
    reference = curve(runs / "single")
    assert sorted(reference) == list(range(1, STEPS + 5))
    resumed = {"2 -> 1": max_diff(reference, curve(runs / "ddp"))}
    if model == "lstm":
        resumed["1 -> 2"] = max_diff(reference, curve(runs / "one-to-two"))
        assert card(runs / "one-to-two")["processes"] == 2
    assert max(resumed.values()) < TOLERANCE
    print(f"\nDDP {model}: 2 processes vs 1 over {STEPS} steps, max |diff|: train loss "
          f"{train:.1e}, val loss {val:.1e}, test loss {test:.1e}, grad norm {norms:.1e} "
          f"(half the batch alone: {wrong:.1e}); resumed to step {STEPS + 4}: "
          + ", ".join(f"{k} {v:.1e}" for k, v in resumed.items()))


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_at_one_step(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "long"
    proc = start(tmp_path, *COMMON, "--steps", "100000", "--eval-every", "1000", "--name", "long",
                 processes=2)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists() or \
                len((run / "metrics.jsonl").read_text().splitlines()) < 5:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never logged a step"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # torchrun passes it on to every rank
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    stopped = card(run)
    assert stopped["status"] == "interrupted", stopped
    step = stopped["steps"]
    assert "stopped by SIGTERM at step" in stopped["reason"]
    assert (run / "checkpoints" / f"step-{step:08d}" / "state.pt").is_file()
    assert max(curve(run)) == step  # no rank went further than the checkpoint
    assert err.count("labkit: stopped by SIGTERM") == 1, err  # said once, by rank 0
    ok(finish(start(tmp_path, "--name", "long", "--resume", "--steps", str(step + 3),
                    "--no-progress", processes=2))[0])
    assert card(run)["status"] == "finished" and sorted(curve(run)) == list(range(1, step + 4))


@pytest.mark.slow
def test_a_diverging_loss_stops_every_rank(tmp_path: Path) -> None:
    code, _, err = finish(start(tmp_path, *COMMON, "--model", "transformer", "--lr", "1e38",
                                "--steps", "20", "--name", "nan", processes=2), timeout=120)[0]
    assert code != 0
    assert err.count("labkit: error: the loss became nan") == 1, err
    assert card(tmp_path / "runs" / "nan")["status"] == "failed"


@pytest.mark.slow
def test_two_processes_fine_tune_like_one(tmp_path: Path) -> None:
    """The classifier's rows of each batch are shared out (r, r + 2, ...) and weighted, so that two
    processes average the gradients of the whole batch's mean loss, even for an odd last batch."""
    runs = tmp_path / "runs"
    ok(finish(start(tmp_path, *COMMON, "--model", "lstm", "--steps", "4", "--name", "lm"))[0])
    args = ["lm", "--task", "number", "--train-size", "90", "--batch-size", "8", "--epochs", "2",
            "--eval-every", "6", "--log-every", "1", "--val-size", "64", "--precision", "fp32", "--no-progress",
            "--mode", "gradual", "--dropout", "0", "--lm-steps", "0"]  # (each process draws its own dropout masks)
    single, ddp = finish(start(tmp_path, *args, "--name", "single", command="finetune"),
                         start(tmp_path, *args, "--name", "ddp", processes=2, command="finetune"))
    ok(single)
    assert ok(ddp).count("run directory:") == 1
    assert card(runs / "ddp")["processes"] == 2
    assert card(runs / "ddp")["steps"] == card(runs / "single")["steps"] == 24  # 12 batches an epoch, the last of 2
    train = max_diff(curve(runs / "single"), curve(runs / "ddp"))
    assert train < TOLERANCE, train
    assert curve(runs / "single", "val_accuracy") == curve(runs / "ddp", "val_accuracy")
    assert card(runs / "ddp")["tokens_seen"] == card(runs / "single")["tokens_seen"]
