"""Fine-tuning runs through the one Trainer: an interrupted run resumes with exactly the losses an
uninterrupted one logs (mid-epoch and across gradual unfreezing), and data-parallel fine-tuning
with two processes trains like one process."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from labkit.data.tasks import TaskData
from labkit.models import RNNConfig, TransformerConfig
from labkit.runs import RunDir, read_metrics
from labkit.train import Callback, History, TrainingStopped
from labkit.train.finetune import FinetuneConfig, build_classifier, finetuner

V = 40


def body_config(family: str) -> dict:
    if family == "rnn":
        return RNNConfig(vocab_size=V, d_embed=16, d_hidden=16, n_layers=2, dropout=0.2).to_dict()
    return TransformerConfig(vocab_size=V, d_model=16, n_layers=2, n_heads=2, d_ff=32, context_length=16,
                             dropout=0.2).to_dict()


def task() -> TaskData:
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(300):
        label = int(torch.randint(2, (1,), generator=g))
        ids = torch.randint(10, V, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
        ids.insert(int(torch.randint(len(ids), (1,), generator=g)), 3 + label)
        rows.append((ids, label))
    return TaskData(rows[:200], rows[200:250], rows[250:], ("neg", "pos"), 0.0)


class StopAt(Callback):
    """Ctrl-C arriving during step `step`: a real SIGINT to this process."""

    def __init__(self, step: int):
        self.step = step

    def on_step(self, trainer, record):
        if record["step"] == self.step:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("family,mode,stop", [("rnn", "gradual", 9), ("transformer", "gradual", 13),
                                              ("transformer", "full", 5)])
def test_resume_reproduces_the_uninterrupted_fine_tuning_losses(family, mode, stop, tmp_path):
    # 200 sentences in batches of 16: 13 steps an epoch, so step 13 ends epoch 0 (gradual
    # unfreezing opens a group there) and step 9 is in the middle of it.
    config = FinetuneConfig(mode=mode, lm_steps=0, epochs=2, batch_size=16, eval_every=4, lr_body=3e-3, lr_head=1e-2,
                            log_every=1, device="cpu", precision="fp32", patience=50, dropout=0.3)

    def trainer(root, callbacks):
        torch.manual_seed(0)
        model = build_classifier(body_config(family), config)
        return finetuner(model, task(), config, RunDir(root), callbacks)

    straight = History()
    card = trainer(tmp_path / "a", [straight]).fit()
    assert card["status"] == "finished" and card["steps"] == 26

    first, second = History(), History()
    with pytest.raises(TrainingStopped, match="SIGINT"):
        trainer(tmp_path / "b", [first, StopAt(stop)]).fit()
    run = RunDir(tmp_path / "b")
    assert run.read_card()["status"] == "interrupted"
    resumed = trainer(tmp_path / "b", [second])
    resumed.resume(run.latest_checkpoint())
    again = resumed.fit()

    a = [r["loss"] for r in straight.steps]
    b = [r["loss"] for r in first.steps] + [r["loss"] for r in second.steps]
    assert len(a) == len(b) == 26
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-6
    assert [r["val_accuracy"] for r in straight.evals] == [r["val_accuracy"] for r in first.evals + second.evals]
    assert again["accuracy"] == card["accuracy"] and again["confusion_matrix"] == card["confusion_matrix"]
    steps = [r["step"] for r in read_metrics(run.metrics_path) if "loss" in r]
    assert steps == list(range(1, 27))


def test_patience_stops_fine_tuning_and_the_test_uses_the_best_weights(tmp_path):
    config = FinetuneConfig(epochs=20, lm_steps=0, batch_size=16, eval_every=2, lr_body=1e-6, lr_head=1e-6, patience=2,
                            device="cpu", precision="fp32")
    torch.manual_seed(0)
    history = History()
    card = finetuner(build_classifier(body_config("rnn"), config), task(), config, RunDir(tmp_path),
                     [history]).fit()
    accuracies = [r["val_accuracy"] for r in history.evals]
    best = max(range(len(accuracies)), key=lambda i: (accuracies[i], -i))
    assert len(accuracies) - 1 - best == 2  # stopped after two evaluations without a better one
    assert card["steps"] < 20 * 13 and card["val_accuracy"] == accuracies[best]
    saved = json.loads((tmp_path / "card.json").read_text())
    assert saved["accuracy"] == card["accuracy"] and saved["task"] == "sst2" and saved["mode"] == "full"
    assert saved["from_scratch"] is False


def test_finetune_cli_resume_after_sigint(tmp_path: Path):
    """`labkit finetune --task number` (no download) stopped by Ctrl-C, then --resume."""
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def labkit(*args, **kw):
        return subprocess.run([sys.executable, "-m", "labkit", *args, "--runs-dir", str(tmp_path / "runs")],
                              capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path, **kw)

    done = labkit("pretrain", "--preset", "tiny", "--corpus", "synthetic", "--name", "lm", "--steps", "6",
                  "--eval-every", "6", "--eval-tokens", "2000", "--no-progress")
    assert done.returncode == 0, done.stderr
    common = ["--task", "number", "--epochs", "2", "--batch-size", "16", "--eval-every", "50", "--lm-steps", "0",
              "--no-progress"]
    straight = labkit("finetune", "lm", *common, "--name", "straight")
    assert straight.returncode == 0, straight.stderr
    assert "number test accuracy" in straight.stdout
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "finetune", "lm", *common, "--name", "cut",
                             "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "runs" / "cut" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and sum(1 for r in read_metrics(metrics) if "loss" in r) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "labkit finetune --name cut" in err and "--resume" in err
    done = labkit("finetune", "--name", "cut", "--resume", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "resuming run:" in done.stdout

    def losses(name):
        return {r["step"]: r["loss"] for r in read_metrics(tmp_path / "runs" / name / "metrics.jsonl") if "loss" in r}

    a, b = losses("straight"), losses("cut")
    assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < 1e-6
    bad = labkit("finetune", "--name", "cut", "--resume", "--lr-head", "0.1")
    assert bad.returncode == 2 and "cannot change --lr-head when resuming" in bad.stderr


def test_gradual_unfreezing_opens_a_group_with_the_first_batch_of_each_epoch():
    config = FinetuneConfig(mode="gradual", lm_steps=0, epochs=3, batch_size=16, eval_every=100, log_every=1, device="cpu")
    torch.manual_seed(0)
    model = build_classifier(body_config("transformer"), config)
    opened = {}

    class Watch(Callback):
        def on_step(self, trainer, record):
            opened[record["step"]] = sum(all(p.requires_grad for p in g) for g in model.layer_groups())

    finetuner(model, task(), config, None, [Watch()]).fit()
    # 13 batches an epoch: epoch e (steps 13e + 1 .. 13e + 13) trains the head and e layer groups
    assert opened == {step: (step - 1) // 13 for step in range(1, 40)}


def test_a_run_killed_during_its_language_model_step_resumes(tmp_path: Path):
    """The config is written before the LM step on the task's text (minutes at real sizes): a kill
    during that step leaves a run that `--resume` finishes (it starts again from the base run) and
    that reads as incomplete, not a folder holding only its lock."""
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"

    def labkit(*args):
        return subprocess.run([sys.executable, "-m", "labkit", *args, "--runs-dir", str(runs)],
                              capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)

    done = labkit("pretrain", "--preset", "tiny", "--corpus", "synthetic", "--name", "lm", "--steps", "4",
                  "--eval-every", "4", "--eval-tokens", "2000", "--no-progress")
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "finetune", "lm", "--task", "number", "--lm-steps", "100000",
                             "--max-steps", "4", "--name", "cut", "--runs-dir", str(runs), "--no-progress"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = RunDir(runs / "cut")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not run.config_path.exists():
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the 100,000 LM steps
    proc.kill()
    proc.communicate(timeout=60)
    assert run.config_path.exists() and not run.card_path.exists() and not run.weights_path.exists()
    from labkit.runs import read_info, run_status
    assert run_status(read_info(run.root)) == "incomplete"
    config = run.load_config()
    assert config["lm_adaptation"] is None and config["finetune"]["lm_steps"] == 100000
    # the LM step is started over on resume: make it short through a copy of the config the user may not edit
    # (its steps cannot change on --resume), so here: a fresh, shorter request proves the run folder resumes
    run.save_config({k: v for k, v in config.items() if k != "format_version"}
                    | {"finetune": config["finetune"] | {"lm_steps": 2}})
    done = labkit("finetune", "--name", "cut", "--resume", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "from step 0: it was stopped before its first checkpoint" in done.stdout
    card = run.read_card()
    assert card["status"] == "finished" and card["steps"] == 4 and card["lm_steps"] == 2
