"""benchmarks/finetune_grid.py, the script behind docs/results.md's fine-tuning grid, in a real process
at a tiny size: a body whose vocabulary holds the task's words from the start (--joint-vocab) and a
grid without an LM step, whose rows must say so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.data import DataConfig, load_lm_data
from labkit.data.tasks import task_tokenizer
from labkit.presets import PRESETS
from labkit.runs import load_run
from labkit.train.finetune import FinetuneConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


def test_a_joint_vocabulary_body_needs_no_words_added_and_a_grid_without_lm_step_says_zero(labkit_data, tmp_path):
    out = tmp_path / "grid.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LABKIT_DATA": str(labkit_data), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "finetune_grid.py"), "--pretrain", "tiny-lstm=4",
                           "--joint-vocab", "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--sizes", "100",
                           "--conditions", "pretrained", "--lm-steps", "0"],
                          capture_output=True, text=True, timeout=500, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]

    # The body's vocabulary: WikiText-2's (as the preset builds it) with the task's words appended,
    # exactly the words fine-tuning would have grown a plain body by.
    config = FinetuneConfig()
    plain = load_lm_data(DataConfig(**PRESETS["tiny-lstm"]["data"], data_dir=str(labkit_data))).tokenizer
    expected = task_tokenizer(config.task, plain, config.vocab_min_count, data_dir=str(labkit_data),
                              val_size=config.val_size)
    body = load_run(tmp_path / "runs" / "tiny-lstm-joint")
    assert expected.vocab_size > plain.vocab_size
    assert body.tokenizer.vocab.itos == expected.vocab.itos
    assert body.model.config.vocab_size == expected.vocab_size

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    pretrained = [r for r in rows if "pretrained_steps" in r]
    assert [(r["body"], r["vocab_size"], r["pretrained_steps"]) for r in pretrained] == [
        ("tiny-lstm-joint", expected.vocab_size, 4)]
    stages = [r for r in rows if "lm_stage" in r]
    assert [(r["lm_stage"], r["lm_steps"]) for r in stages] == [("pretrained", 0)]
    runs = [r for r in rows if "condition" in r]
    assert [(r["condition"], r["labels"], r["seed"]) for r in runs] == [("pretrained", 100, s) for s in (0, 1, 2)]
    assert all(r["vocab_added"] == 0 and r["lm_steps"] == 0 and r["steps"] == 40 for r in runs)  # 10 epochs of 100
    assert all(sum(r["predicted"]) == 872 for r in runs)  # every SST-2 dev sentence, once
    assert "| pretrained |" in proc.stdout  # the table at the end, a stage without steps left out of it
