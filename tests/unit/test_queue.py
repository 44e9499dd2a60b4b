"""The training queue (labkit.train.queue) on the tiny preset and the synthetic corpus, a few steps a
job: one job trains at a time and the others wait in line with their position; Stop checkpoints as
Ctrl-C does and the command line resumes the run from there; fine-tuning jobs, the queue's own
resume, names kept inside the runs folder, and a failing job that leaves the queue working."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from labkit.cli import main
from labkit.errors import LabkitError, RunError
from labkit.runs import RunDir, read_metrics
from labkit.train.callbacks import Callback
from labkit.train.jobs import Finetune, Pretrain
from labkit.train.queue import TrainingQueue


class Gate(Callback):
    """Holds the training thread at step `at` (its first training record there) until `open()`."""

    made: list[Gate] = []

    def __init__(self, at: int):
        self.at, self.reached, self.opened = at, threading.Event(), threading.Event()
        Gate.made.append(self)

    def on_step(self, trainer, record) -> None:
        if record["step"] == self.at:
            self.reached.set()
            assert self.opened.wait(60), "the test never opened the gate"

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def queue():
    q = TrainingQueue()
    yield q
    for gate in Gate.made:  # a test that failed before opening its gate leaves no thread waiting
        gate.open()
    Gate.made.clear()
    q.shutdown(timeout=60)


def checkpoint_steps(run: RunDir) -> list[int]:
    return [int(p.name.removeprefix("step-")) for p in run.checkpoints()]


def train_steps(path: Path) -> list[int]:
    return [r["step"] for r in read_metrics(RunDir(path).metrics_path) if "loss" in r]


def test_one_job_trains_at_a_time_and_the_others_wait_in_line(queue, tmp_path):
    gate = Gate(at=1)
    first = queue.submit(Pretrain(steps=6), tmp_path, "first", callbacks=[gate])
    assert gate.reached.wait(60)
    second = queue.submit(Pretrain(steps=6), tmp_path, "second")
    third = queue.submit(Pretrain(steps=6), tmp_path, "third")
    assert [queue.position(i) for i in (first, second, third)] == [0, 1, 2]
    assert [queue.status(i).status for i in (first, second, third)] == ["running", "waiting", "waiting"]
    assert not (tmp_path / "second").exists()  # nothing of a waiting job is made yet
    assert queue.cancel(third) == "cancelled" and queue.position(third) is None
    assert queue.position(second) == 1
    with pytest.raises(LabkitError, match="only a waiting job can be cancelled"):
        queue.cancel(first)
    gate.open()
    done = [queue.wait(i, timeout=120) for i in (first, second)]
    assert [(j.status, j.card["steps"], j.card["status"]) for j in done] == [("finished", 6, "finished")] * 2
    assert done[0].ended_at <= done[1].started_at  # one after the other
    assert [j.name for j in queue.jobs()] == ["first", "second", "third"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "second"]  # the cancelled job made nothing


def test_stop_checkpoints_as_ctrl_c_does_and_the_command_line_resumes_from_there(queue, tmp_path, capsys):
    gate = Gate(at=5)  # the tiny preset writes a training record every 5 steps
    job = queue.submit(Pretrain(steps=12), tmp_path, "stopped", callbacks=[gate])
    assert gate.reached.wait(60)
    assert queue.stop(job) == "stopping" and queue.position(job) == 0
    gate.open()
    stopped = queue.wait(job, timeout=120)
    run = RunDir(tmp_path / "stopped")
    assert (stopped.status, stopped.error, stopped.step) == ("stopped", "stopped by SIGINT at step 5", 5)
    assert checkpoint_steps(run) == [5]
    assert run.read_card()["status"] == "interrupted" and run.read_card()["steps"] == 5
    whole = queue.wait(queue.submit(Pretrain(steps=12), tmp_path, "whole"), timeout=120)  # the same, uninterrupted
    assert whole.status == "finished"
    with pytest.raises(LabkitError, match="whole has finished: there is nothing to resume"):
        queue.resume(tmp_path, "whole")

    capsys.readouterr()
    assert main(["pretrain", "--name", "stopped", "--runs-dir", str(tmp_path), "--resume", "--no-progress"]) == 0
    assert f"resuming run: {tmp_path / 'stopped'} (from step 5)" in capsys.readouterr().out
    card = run.read_card()
    assert (card["status"], card["steps"]) == ("finished", 12)
    assert train_steps(run.root) == [1, 5, 10]
    # continued where it stopped: the losses and the result an uninterrupted run has
    losses = {p: {r["step"]: r["loss"] for r in read_metrics(RunDir(p).metrics_path) if "loss" in r}
              for p in (run.root, tmp_path / "whole")}
    assert losses[run.root] == losses[tmp_path / "whole"]
    assert card["test_loss"] == whole.card["test_loss"]


def test_a_finetuning_job_stopped_and_resumed_in_the_queue(queue, tmp_path):
    base = queue.wait(queue.submit(Pretrain(family="transformer", steps=6, corpus="synthetic-agreement"), tmp_path, "lm"),
                      timeout=120)
    assert base.status == "finished"
    config = RunDir(tmp_path / "lm").load_config()
    assert (config["model"]["family"], config["data"]["corpus"], config["train"]["max_steps"]) == \
        ("transformer", "synthetic-agreement", 6)
    gate = Gate(at=1)
    job = queue.submit(Finetune("lm", train_size=200, steps=10), tmp_path, callbacks=[gate])
    assert queue.status(job).name == "lm-number-full-n200-s0"  # as `labkit finetune` names it
    assert gate.reached.wait(60)
    queue.stop(job)
    gate.open()
    assert queue.wait(job, timeout=120).status == "stopped"
    run = RunDir(tmp_path / "lm-number-full-n200-s0")
    assert checkpoint_steps(run) == [1]
    resumed = queue.wait(queue.resume(tmp_path, run.name), timeout=120)
    assert (resumed.status, resumed.step, resumed.card["steps"]) == ("finished", 10, 10)
    assert (resumed.card["kind"], resumed.card["train_size"], resumed.card["base_run"]) == \
        ("classifier", 200, str(tmp_path.resolve() / "lm"))
    second = queue.submit(Finetune("lm", train_size=200, steps=10), tmp_path)  # the name is taken: -2
    assert queue.status(second).name == "lm-number-full-n200-s0-2"
    queue.cancel(second)


def test_names_stay_inside_the_runs_folder(queue, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    (root / "taken").mkdir()
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    for name in ("../escape", "/tmp/abs", "a/b", "..", "", "link"):
        with pytest.raises(RunError, match="invalid run name"):
            queue.submit(Pretrain(steps=2), root, name)
    with pytest.raises(RunError, match="'taken' is taken"):
        queue.submit(Pretrain(steps=2), root, "taken")
    with pytest.raises(RunError, match="invalid run name"):
        queue.submit(Finetune("../outside"), root)
    with pytest.raises(LabkitError, match="no run 'missing'"):
        queue.resume(root, "missing")
    with pytest.raises(LabkitError, match="choose a preset"):
        queue.submit(Pretrain(preset="huge"), root)
    with pytest.raises(LabkitError, match="choose a corpus"):
        queue.submit(Pretrain(corpus="/etc/passwd"), root)
    assert queue.jobs() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "runs"]
    assert list((tmp_path / "outside").iterdir()) == []


class Boom(Callback):
    def on_step(self, trainer, record) -> None:
        raise RuntimeError("boom")


def test_a_failing_job_fails_alone_and_the_queue_goes_on(queue, tmp_path):
    RunDir(tmp_path / "damaged").save_config({"kind": "lm", "model": {}})
    broken = queue.submit(Finetune("damaged", steps=2), tmp_path, "broken")
    raising = queue.submit(Pretrain(steps=2), tmp_path, "raising", callbacks=[Boom()])
    good = queue.submit(Pretrain(steps=2), tmp_path, "good")
    assert queue.wait(broken, timeout=120).error == \
        "model config has family None; expected one of rnn, transformer, classifier, bow"
    failed = queue.wait(raising, timeout=120)
    assert (failed.status, failed.error) == ("failed", "RuntimeError: boom")
    # its card said running, with this process's id: it would have looked alive for ever
    card = RunDir(tmp_path / "raising").read_card()
    assert (card["status"], card["reason"]) == ("failed", "RuntimeError: boom")
    assert queue.wait(good, timeout=120).status == "finished"
