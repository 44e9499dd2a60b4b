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
    DEMO_BUDGET_S,
    DEMO_RUNS,
    JOB_FILE,
    demo_names,
    demo_preset,
    demo_progress,
    demo_task,
    lm_budget,
    wikitext2_on_disk,
)
from labkit.experiments import train_demo_models
from labkit.inspect.curves import last_step
from labkit.presets import PRESETS
from labkit.runs import load_run


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


def test_demo_presets_and_task_follow_the_corpus(tmp_path, monkeypatch):
    assert demo_preset("synthetic", "lstm") == "tiny-lstm" and demo_preset("wikitext-2", "lstm") == "demo-lstm"
    for family in ("lstm", "transformer"):  # the progress bar's clock: each preset's own budget
        assert lm_budget("wikitext-2", family) == PRESETS[f"demo-{family}"]["train"]["time_budget_s"]
        assert lm_budget("synthetic", family) == DEMO_BUDGET_S and "time_budget_s" not in PRESETS[f"tiny-{family}"]["train"]
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


def test_train_demo_models_makes_two_loadable_runs_and_a_classifier(tmp_path, one_thread):
    cards = train_demo_models(tmp_path, steps=3, corpus="synthetic")
    assert list(cards) == [*DEMO_RUNS, "demo-lstm-number"]
    tuned = cards.pop("demo-lstm-number")
    assert tuned["status"] == "finished" and tuned["steps"] == 3 and tuned["base_run"] == str(tmp_path / "demo-lstm")
    tuned_config = load_run(tmp_path / "demo-lstm-number").config
    assert tuned_config["finetune"]["task"] == "number"
    # the settings of the demo's measured run (docs/results.md), not the default recipe's
    assert {k: tuned_config["finetune"][k] for k in ("lm_steps", "schedule", "warmup_frac", "epochs")} == \
        {"lm_steps": 0, "schedule": "cosine", "warmup_frac": 0.05, "epochs": 3}
    assert tuned_config["model"]["pooling"] == "last" and "lm_steps" not in tuned
    for name, card in cards.items():
        assert card["status"] == "finished" and card["steps"] == 3
        loaded = load_run(tmp_path / name)
        assert loaded.config["data"]["corpus"] == "synthetic"
        assert last_step(tmp_path / name) == 3
    assert load_run(tmp_path / "demo-transformer").model.config.family == "transformer"
    from labkit.inspect.timeline import read_timeline

    for name in cards:  # the timeline at each evaluation: on the synthetic corpus, the probe too
        snapshots = read_timeline(tmp_path / name)
        assert [s.step for s in snapshots] == [1, 2, 3] and "agreement" in snapshots[-1].probes
    assert read_timeline(tmp_path / "demo-transformer")[-1].attention is not None


def test_demo_progress_reads_the_job_and_the_runs(tmp_path):
    assert demo_progress(tmp_path) is None
    (tmp_path / JOB_FILE).write_text(json.dumps({"pid": os.getpid(), "runs": ["a", "b"], "steps": 10,
                                                 "corpus": "synthetic", "started_at": 1.0}))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n{"step": 6, "loss": 1.0}\n')
    p = demo_progress(tmp_path)
    assert p.active and not p.finished and p.fraction == pytest.approx(6 / 20)
    assert p.steps == {"a": (6, 10), "b": (0, 10)}
    # With time budgets, a run is as far along as its steps or its training clock says, whichever is further.
    (tmp_path / JOB_FILE).write_text(json.dumps({"pid": os.getpid(), "runs": ["a", "b"], "steps": 10,
                                                 "budgets_s": [60.0, 20.0], "corpus": "wikitext-2",
                                                 "started_at": 1.0}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0, "elapsed_s": 5.0}\n')
    p = demo_progress(tmp_path)
    assert p.fraction == pytest.approx((6 / 10 + 5 / 20) / 2) and not p.finished
    (tmp_path / "b" / "metrics.jsonl").write_text('{"step": 2, "loss": 1.0, "elapsed_s": 25.0}\n')
    assert demo_progress(tmp_path).fraction == pytest.approx((6 / 10 + 0.99) / 2)  # over budget: not yet done
    (tmp_path / JOB_FILE).write_text("{torn")
    assert demo_progress(tmp_path) is None
