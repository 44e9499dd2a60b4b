"""The synthetic corpus and the demo models (labkit.demo)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from labkit.data import DataConfig
from labkit.data.lm import corpus_lines, load_lm_data
from labkit.data.synthetic import INTRANSITIVE, NOUNS, synthetic_lines, synthetic_splits
from labkit.demo import (
    DEMO_RUNS,
    JOB_FILE,
    STATUS_FILE,
    Stage,
    check_names,
    demo_names,
    demo_plan,
    demo_preset,
    demo_progress,
    demo_task,
    minutes,
    wikitext2_on_disk,
)
from labkit.errors import LabkitError
from labkit.experiments import train_demo_models
from labkit.presets import PRESETS
from labkit.runs import load_run, read_metrics


def test_synthetic_corpus_is_deterministic_and_structured():
    assert synthetic_lines(50, seed=3) == synthetic_lines(50, seed=3)
    assert synthetic_lines(50, seed=3) != synthetic_lines(50, seed=4)
    lines = synthetic_lines(400)
    words = [w for line in lines for w in line.split()]
    assert len(set(words)) < 120 and all(line.endswith(" .") for line in lines)
    # Agreement: a bare "the <noun> <intransitive verb>" sentence agrees in number.
    plural_verbs = set(INTRANSITIVE.values())
    for line in lines:
        for sentence in line.split(" . "):
            w = sentence.split()
            if len(w) >= 3 and w[0] == "the" and w[2] in INTRANSITIVE | {v: v for v in plural_verbs}:
                assert (w[1] in NOUNS.values()) == (w[2] in plural_verbs), sentence


def test_corpus_synthetic_is_a_data_option():
    lines = corpus_lines(DataConfig(corpus="synthetic"))
    assert lines == synthetic_splits()
    assert len(lines["train"]) == 4000 and len(lines["valid"]) == len(lines["test"]) == 300
    data = load_lm_data(DataConfig(corpus="synthetic", train_tokens=1000))
    assert data.train.numel() == 1000 and data.tokenizer.vocab_size < 120
    assert DataConfig.from_dict(DataConfig(corpus="synthetic").to_dict()).corpus == "synthetic"


def test_demo_names_step_aside_for_existing_runs(tmp_path):
    assert demo_names(tmp_path) == DEMO_RUNS == {"demo-lstm": "lstm", "demo-transformer": "transformer"}
    (tmp_path / "demo-lstm").mkdir()
    assert demo_names(tmp_path) == {"demo-lstm-2": "lstm", "demo-transformer-2": "transformer"}
    (tmp_path / "demo-lstm-2-sst2").mkdir()  # a fine-tuned run of an earlier demo keeps its name too
    assert demo_names(tmp_path) == {"demo-lstm-3": "lstm", "demo-transformer-3": "transformer"}
    (tmp_path / "demo-lstm-3-number-scratch").mkdir()  # so does the from-scratch twin
    assert demo_names(tmp_path) == {"demo-lstm-4": "lstm", "demo-transformer-4": "transformer"}


def test_the_plan_is_five_step_bound_stages_with_plain_names():
    plan = demo_plan(DEMO_RUNS, "wikitext-2", "sst2")
    assert [(s.run, s.kind, s.family, s.base) for s in plan] == [
        ("demo-lstm", "lm", "lstm", None), ("demo-transformer", "lm", "transformer", None),
        ("demo-lstm-sst2", "finetune", "lstm", "demo-lstm"),
        ("demo-transformer-sst2", "finetune", "transformer", "demo-transformer"),
        ("demo-lstm-sst2-scratch", "scratch", "lstm", "demo-lstm")]
    # the language models' steps are their presets' (no time budget anywhere)
    for stage in plan[:2]:
        train = PRESETS[f"demo-{stage.family}"]["train"]
        assert stage.steps == train["max_steps"] == 1000 and train["time_budget_s"] is None
        assert train["eval_every"] * 8 <= stage.steps and train["log_every"] * 50 <= stage.steps
    assert PRESETS["demo-transformer"]["model"]["n_layers"] >= 2
    tiny = demo_plan(DEMO_RUNS, "wikitext-2", "sst2", steps=4)
    assert [s.steps for s in tiny] == [4] * 5 and tiny[0].reference_s == pytest.approx(plan[0].reference_s * 4 / 1000)
    for bad in (["../x", "y"], ["/abs", "y"], ["a", "a"], [".hidden", "y"], ["x" * 101, "y"]):
        with pytest.raises(LabkitError):
            check_names(bad)
    with pytest.raises(LabkitError, match="different names"):
        check_names(["a", "a"])


def test_demo_presets_and_task_follow_the_corpus(tmp_path, monkeypatch):
    assert demo_preset("synthetic", "lstm") == "tiny-lstm" and demo_preset("wikitext-2", "lstm") == "demo-lstm"
    real = Path(os.environ.get("LABKIT_DATA") or tmp_path / "none") / "sst2"
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path))
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    assert demo_task("synthetic") == demo_task("wikitext-2") == "number"  # no SST-2 on disk
    (tmp_path / "sst2").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "sst2" / name).write_text("sentence\tlabel\na fine film\t1\n")
    assert demo_task("wikitext-2") == "number"  # files of the wrong size are not SST-2
    if not (real / "train.tsv").is_file():
        pytest.skip("LABKIT_DATA has no sst2/: the real files are needed for the last check")
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "sst2" / name).unlink()
        (tmp_path / "sst2" / name).symlink_to(real / name)
    assert demo_task("wikitext-2") == "sst2" and demo_task("synthetic") == "number"


def test_wikitext2_on_disk_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path))
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LABKIT_OFFLINE", raising=False)
    assert wikitext2_on_disk() is False
    assert not (tmp_path / "cache").exists()


@pytest.fixture
def one_thread():
    """As `labkit demo` runs: tiny models train far faster with one thread on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_demo_models_makes_two_language_models_and_three_classifiers(tmp_path, one_thread):
    cards = train_demo_models(tmp_path, steps=3, corpus="synthetic", status=True)
    classifiers = ["demo-lstm-number", "demo-transformer-number", "demo-lstm-number-scratch"]
    assert list(cards) == [*DEMO_RUNS, *classifiers]
    for name, base in zip(classifiers, ["demo-lstm", "demo-transformer", "demo-lstm"]):
        tuned = cards[name]
        assert tuned["status"] == "finished" and tuned["steps"] == 3 and tuned["base_run"] == str(tmp_path / base)
        assert tuned["from_scratch"] is name.endswith("-scratch") and tuned["stopped_by"] == "max steps"
        config = load_run(tmp_path / name).config
        assert config["finetune"]["task"] == "number" and config["finetune"]["time_budget_s"] is None
        assert {k: config["finetune"][k] for k in ("lm_steps", "schedule", "epochs")} == \
            {"lm_steps": 0, "schedule": "cosine", "epochs": 3}
    for name in DEMO_RUNS:
        card = cards[name]
        assert card["status"] == "finished" and card["steps"] == 3 and card["stopped_by"] == "max steps"
        loaded = load_run(tmp_path / name)
        assert loaded.config["data"]["corpus"] == "synthetic" and loaded.config["train"]["time_budget_s"] is None
        assert max(r["step"] for r in read_metrics(tmp_path / name / "metrics.jsonl")) == 3
    assert load_run(tmp_path / "demo-transformer").model.config.family == "transformer"
    from labkit.inspect.timeline import read_timeline

    for name in DEMO_RUNS:  # the timeline at each evaluation: on the synthetic corpus, the probe too
        snapshots = read_timeline(tmp_path / name)
        assert [s.step for s in snapshots] == [1, 2, 3] and "agreement" in snapshots[-1].probes
    assert read_timeline(tmp_path / "demo-transformer")[-1].attention is not None
    # the status file: the last stage, done
    status = json.loads((tmp_path / STATUS_FILE).read_text())
    assert status["run"] == "demo-lstm-number-scratch" and status["phase"] == "done" and status["step"] == 3


def write_job(root: Path, plan: list[Stage], started_at: float, start_s: float = 0.0) -> None:
    from dataclasses import asdict
    (root / JOB_FILE).write_text(json.dumps({"pid": os.getpid(), "plan": [asdict(s) for s in plan],
                                             "corpus": "wikitext-2", "start_s": start_s, "started_at": started_at}))


def test_demo_progress_counts_the_work_done_in_reference_seconds_and_tells_the_time_left(tmp_path):
    assert demo_progress(tmp_path) is None
    plan = [Stage("a", "lm", "lstm", 100, 60.0), Stage("b", "finetune", "lstm", 10, 20.0, base="a")]
    write_job(tmp_path, plan, started_at=1000.0, start_s=20.0)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.jsonl").write_text('{"step": 40, "loss": 1.0}\n{"step": 50, "loss": 1.0}\n')
    p = demo_progress(tmp_path)
    p.now = 1000.0 + 150.0  # 150 s of wall clock since the start
    # done: the start (20 s) and half of a's 60 s, of 100 reference seconds in all
    assert p.active and not p.finished and p.steps == {"a": (50, 100), "b": (0, 10)}
    assert p.done_s == pytest.approx(50.0) and p.fraction == pytest.approx(0.5)
    # 150 s of wall clock for 50 reference seconds: this machine takes 3x; 50 left, so 150 s more
    assert p.pace == pytest.approx(3.0) and p.eta_s == pytest.approx(150.0)
    said = p.describe()
    assert said.startswith("Stage 1 of 2, pretraining a: step 50 of 100. 50% of the demo done")
    assert "about 2 min left at this machine's pace (3.0x the reference machine's time)" in said
    # the status file says it is evaluating: the line says so, the numbers stay the same
    (tmp_path / STATUS_FILE).write_text(json.dumps({"run": "a", "phase": "evaluating", "step": 50}))
    p = demo_progress(tmp_path)
    p.now = 1150.0
    assert "pretraining a: evaluating at step 50. 50% of the demo done" in p.describe()
    # a finished first stage counts whole; the second is named next
    (tmp_path / "a" / "card.json").write_text(json.dumps({"status": "finished"}))
    (tmp_path / "a" / "config.json").write_text(json.dumps({"kind": "lm", "format_version": 1}))
    p = demo_progress(tmp_path)
    p.now = 1150.0
    assert p.done_s == pytest.approx(80.0) and "Stage 2 of 2, fine-tuning b" in p.describe()
    (tmp_path / JOB_FILE).write_text("{torn")
    assert demo_progress(tmp_path) is None


def test_before_enough_is_done_the_estimate_is_the_reference_machines(tmp_path):
    write_job(tmp_path, [Stage("a", "lm", "lstm", 1000, 300.0)], started_at=1000.0)
    p = demo_progress(tmp_path)
    p.now = 1010.0
    assert p.pace is None and p.describe() == ("Stage 1 of 1, pretraining a: loading the data. 0% of the demo done; "
                                               "about 5 min in all on a quiet 2-core CPU.")
    assert [minutes(s) for s in (12, 61, 89, 95, 720, 3900)] == ["10 s", "60 s", "90 s", "2 min", "12 min", "1 h 5 min"]
