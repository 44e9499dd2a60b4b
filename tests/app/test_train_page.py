"""The Train page (app/views/train.py) in Streamlit's AppTest, on the server's one training queue
(labkit.train.queue.default_queue, shared by every session of this process like a real server's):
a pretraining started from the page waits in line behind another session's jobs with its place
shown, then trains with its loss curve and ends with its card's numbers; Stop checkpoints and
Resume finishes the run; a fine-tuning run from a body the page lists; class mode puts jobs in
the same line (and Cancel takes one out). The runs are tiny, on the synthetic corpus."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from labkit.runs import RunDir, read_metrics
from labkit.train.callbacks import Callback
from labkit.train.jobs import Pretrain
from labkit.train.queue import default_queue

from appruns import app, charts, texts, traces


class Gate(Callback):
    """Holds another session's job at its first step until `open()` (the page's job waits meanwhile)."""

    made: list[Gate] = []

    def __init__(self):
        self.reached, self.opened = threading.Event(), threading.Event()
        Gate.made.append(self)

    def on_step(self, trainer, record) -> None:
        self.reached.set()
        assert self.opened.wait(120), "the test never opened the gate"

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("LABKIT_RUNS", raising=False)
    monkeypatch.delenv("LABKIT_CLASS", raising=False)
    queue = default_queue()
    assert not [j for j in queue.jobs() if j.active], "a job of another test is still in line"
    yield tmp_path / "runs"
    for gate in Gate.made:  # a test that failed before opening its gate leaves no thread waiting
        gate.open()
    Gate.made.clear()
    for job in queue.jobs():  # nothing left training for the next test
        if job.active:
            queue.stop(job.id)
            queue.wait(job.id, timeout=120)


def shown(at) -> str:
    """The page's text: its markdown, captions, messages and progress bars' labels."""
    said = [texts(getattr(at, kind)) for kind in ("markdown", "caption", "info", "success", "warning", "error")]
    return "\n".join(said + [e.proto.text for e in at.get("progress")]).replace("\\", "")  # (markdown escapes)


def until(at, said: str, timeout: float = 120, every: float = 1.0) -> str:
    """Rerun the page every `every` s (its live fragment does every 2 s) until it shows `said`; what it shows."""
    deadline = time.monotonic() + timeout
    while said not in (text := shown(at)):
        assert time.monotonic() < deadline, f"the page never said {said!r}; it shows:\n{text[-1500:]}"
        time.sleep(every)
        at.run()
        assert not at.exception, at.exception
    return text


def button(at, label: str):
    found = [b for b in at.button if b.label == label]
    assert len(found) == 1, [b.label for b in at.button]
    return found[0]


def test_a_pretraining_waits_its_turn_then_trains_with_its_curve(root):
    queue, gate = default_queue(), Gate()
    other = queue.submit(Pretrain(steps=6), root, "other-student", callbacks=[gate])
    assert gate.reached.wait(60)
    waiting = queue.submit(Pretrain(steps=6), root, "another-student")
    at = app(root, "train")
    assert at.title[0].value == "Train"
    at.number_input(key="train_steps_tiny_lstm").set_value(12)
    at.text_input(key="train_name").set_value("mine")
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    assert "waiting: 2nd in line" in shown(at)
    line = at.dataframe[0].value
    assert list(line["place"]) == ["training", "1st", "2nd"]
    assert list(line["run"]) == ["other-student", "another-student", "mine"]
    assert not (root / "mine").exists()
    gate.open()
    for job in (other, waiting):
        assert queue.wait(job, timeout=120).status == "finished"
    text = until(at, "finished: 12 steps")
    card = RunDir(root / "mine").read_card()
    assert f"finished: 12 steps; validation perplexity {card['best_val_ppl']:,.2f}, test {card['test_ppl']:,.2f}" in text
    curve = traces(charts(at)[0])
    assert list(curve["mine"]["x"]) == [1, 5, 10]  # the tiny preset logs every 5 steps
    assert list(curve["mine val"]["x"]) == [12]
    assert list(curve["mine (raw)"]["y"]) == [r["loss"] for r in read_metrics(RunDir(root / "mine").metrics_path)
                                              if "loss" in r]
    assert RunDir(root / "mine").load_config()["model"]["cell"] == "lstm"


STEPS = 300  # a tiny LSTM trains 20 to 70 steps a second: the page has time to press Stop before the end


def test_stop_checkpoints_and_resume_finishes_the_run(root):
    at = app(root, "train")
    at.number_input(key="train_steps_tiny_lstm").set_value(STEPS)
    at.text_input(key="train_name").set_value("long")
    at.button(key="train_start").click().run()
    until(at, "training: step", every=0.2)
    button(at, "Stop").click().run()
    text = until(at, "with a checkpoint: **Resume** continues it")
    run = RunDir(root / "long")
    step = run.read_card()["steps"]
    assert 0 < step < STEPS and run.read_card()["status"] == "interrupted"
    assert [int(p.name.removeprefix("step-")) for p in run.checkpoints()][-1] == step
    assert f"stopped at step {step:,} with a checkpoint" in text
    assert f"`labkit pretrain --name long --runs-dir {root.resolve()} --resume`" in text
    elsewhere = app(root, "train")  # another session (or this one after a reload) lists the folder's stopped runs
    assert elsewhere.selectbox(key="train_resume_pick").options == ["long"]
    button(at, "Resume").click().run()
    until(at, f"finished: {STEPS} steps")
    assert run.read_card()["status"] == "finished"
    logged = [r["step"] for r in read_metrics(run.metrics_path) if "loss" in r]
    assert logged == [1, *range(5, STEPS + 1, 5)]  # continued where it stopped: each step logged once
    assert "Resume a stopped run" not in shown(at)


def test_a_fine_tuning_run_on_a_body_the_page_lists(root):
    assert default_queue().wait(default_queue().submit(Pretrain(steps=6), root, "body"), timeout=120).status == "finished"
    at = app(root, "train")
    at.radio(key="train_kind").set_value("fine-tune").run()
    assert at.selectbox(key="train_body").options == ["body"]
    at.number_input(key="train_labels").set_value(300)
    at.toggle(key="train_scratch").set_value(True)
    at.number_input(key="train_ft_steps").set_value(10)
    at.button(key="train_ft_start").click().run()
    text = until(at, "finished: 10 steps")
    card = RunDir(root / "body-number-scratch-n300-s0").read_card()
    assert (card["kind"], card["from_scratch"], card["train_size"], card["steps"]) == ("classifier", True, 300, 10)
    assert f"test accuracy {card['accuracy']:.3f}" in text
    assert "fine-tuning body on number (from scratch), 300 labelled sentences, 10 steps" in text


def test_class_mode_puts_jobs_in_the_same_line_and_cancel_takes_one_out(root, monkeypatch):
    monkeypatch.setenv("LABKIT_CLASS", "1")
    monkeypatch.setenv("LABKIT_RUNS", str(root))  # the server's folder, every session's in class mode
    queue, gate = default_queue(), Gate()
    other = queue.submit(Pretrain(steps=2), root, "other-student", callbacks=[gate])
    assert gate.reached.wait(60)
    at = app(None, "train")
    assert "Class mode: this server trains for the whole class" in shown(at)
    at.button(key="train_start").click().run()
    assert "waiting: 1st in line" in shown(at)
    mine = [j for j in queue.jobs() if j.active and j.id != other]
    assert [(j.status, j.runs_dir) for j in mine] == [("waiting", root.resolve())]
    button(at, "Cancel").click().run()
    assert "cancelled before it started" in shown(at)
    assert queue.status(mine[0].id).status == "cancelled"
    gate.open()
    assert queue.wait(other, timeout=120).status == "finished"
    assert sorted(p.name for p in root.iterdir()) == ["other-student"]
