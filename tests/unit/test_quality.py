"""labkit.inspect.quality: the one check of whether a run has learned enough to show anything, on
cards written by hand (each a case whose answer is known)."""

from __future__ import annotations

import os
from pathlib import Path

from labkit.inspect import quality
from labkit.runs import RunInfo, run_status


def info(card: dict, kind: str = "lm", config: dict | None = None) -> RunInfo:
    return RunInfo(Path("/runs/r"), {"kind": kind, "model": {}, **(config or {})}, {"status": "finished", **card}, None)


def test_a_language_model_no_better_than_the_unigram_counts_is_flagged():
    assert quality.problems(info({"best_val_ppl": 1958.0, "unigram_val_ppl": 915.2}))
    assert quality.problems(info({"best_val_ppl": 915.2, "unigram_val_ppl": 915.2}))  # equal is not better
    assert not quality.problems(info({"best_val_ppl": 245.0, "unigram_val_ppl": 915.2}))
    assert not quality.problems(info({"best_val_ppl": 1958.0}))  # a card from before the unigram level: no check
    said = quality.warning(info({"best_val_ppl": 1958.0, "unigram_val_ppl": 915.2}))
    assert said.startswith("**r** has not learned enough") and "1,958.0" in said and "915.2" in said


def test_a_classifier_with_one_answer_or_near_the_majority_is_flagged():
    # 872 sentences, 444 positive: "positive" for all of them
    one = {"confusion_matrix": [[0, 428], [0, 444]], "labels": ["negative", "positive"]}
    said = quality.problems(info(one, "classifier"))
    assert said and "**positive** for every one of the 872" in said[0]
    # accuracy 452 / 872 = 51.8%, the majority class 444 / 872 = 50.9%: within 2 points
    near = {"confusion_matrix": [[20, 408], [12, 432]], "labels": ["negative", "positive"]}
    said = quality.problems(info(near, "classifier"))
    assert said and "51.8%" in said[0] and "50.9%" in said[0]
    # 480 / 872 = 55.0%: more than 2 points above the majority, both labels used
    fine = {"confusion_matrix": [[100, 328], [64, 380]], "labels": ["negative", "positive"]}
    assert not quality.problems(info(fine, "classifier"))
    assert not quality.problems(info({"confusion_matrix": [[1, "x"], [0, 1]]}, "classifier"))  # damaged: no claim


def test_a_run_its_time_budget_starved_is_flagged():
    starved = {"steps": 13, "max_steps": 1000, "stopped_by": "time budget", "best_val_ppl": 300.0}
    said = quality.problems(info(starved))
    assert said and "13 of the 1,000 steps" in said[0]
    assert not quality.problems(info({**starved, "steps": 600}))  # more than half: not starved
    # a laptop recipe: "until the time budget" (max_steps 1,000,000) is what it intends
    assert not quality.problems(info({**starved, "max_steps": 1_000_000}))
    assert not quality.problems(info({**starved, "stopped_by": "patience"}))
    # a card from before stopped_by: its config's time budget and too few steps say the same
    old = {"steps": 13, "max_steps": 1000}
    assert quality.problems(info(old, config={"train": {"time_budget_s": 55.0}}))
    assert not quality.problems(info(old, config={"train": {"time_budget_s": None}}))


def test_running_and_unreadable_runs_are_not_judged():
    weak = {"best_val_ppl": 1958.0, "unigram_val_ppl": 915.2}
    running = RunInfo(Path("/runs/r"), {"kind": "lm", "model": {}}, {**weak, "status": "running", "pid": os.getpid()},
                      None)
    assert run_status(running) == "running" and quality.problems(running) == []
    assert quality.problems(info({**weak, "status": "interrupted"}))  # stopped: judged as it is
    broken = RunInfo(Path("/runs/r"), None, None, "config.json is damaged")
    assert quality.problems(broken) == [] and quality.warning(broken) is None
