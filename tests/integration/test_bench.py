"""`labkit bench` (labkit.bench): the reference computes what labkit's models compute, and the
benchmark runs end to end at a tiny size and writes valid JSON (its numbers are not asserted: speed
is measured, not tested). The GPU script that runs it: tests/integration/test_gpu_check.py."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labkit.bench.measure import time_to
from labkit.bench.reference import ReferenceTrainer, build_reference, load_labkit_weights
from labkit.bench.run import table
from labkit.bench.variants import BenchConfig
from labkit.device import cpu_has_bf16, denormals_flushed, resolve_precision
from labkit.errors import LabkitError
from labkit.models import RNNConfig, TransformerConfig, build_model

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def tiny(family: str, **kw):
    if family == "rnn":
        return RNNConfig(vocab_size=50, d_embed=16, d_hidden=16, n_layers=2, dropout=0.0, **kw)
    return TransformerConfig(vocab_size=50, d_model=16, n_layers=2, n_heads=2, d_ff=32, context_length=12,
                             dropout=0.0, **kw)


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_reference_computes_what_labkit_computes(family):
    torch.manual_seed(0)
    model = build_model(tiny(family)).eval()
    reference = build_reference(model.config).eval()
    load_labkit_weights(reference, model)
    x = torch.randint(50, (3, 10))
    with torch.no_grad():
        ours = model(x).logits
        theirs, _ = reference(x, reference.init_hidden(3) if family == "rnn" else None)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    # and one training step of the reference moves the loss like a plain loop would
    stream = torch.randint(50, (400,))
    trainer = ReferenceTrainer(reference, stream, {"batch_size": 4, "seq_len": 8, "grad_clip": 1.0,
                                                   "optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.0},
                               model.config.family)
    before = trainer.evaluate(stream[:200], batch_size=2)
    for _ in range(20):
        trainer.step(1e-2)
    assert trainer.tokens_seen == 20 * 4 * 8
    after = trainer.evaluate(stream[:200], batch_size=2)
    assert math.isfinite(before) and after < before
    with pytest.raises(ValueError, match="reference implements"):
        build_reference(RNNConfig(cell="gru"))


def test_precision_and_process_settings():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(LabkitError, match="unknown precision"):
        resolve_precision("fp8", cpu)
    # (the allocator's setting: tests/unit/test_train.py::test_training_memory_is_kept_while_training_and_handed_back_after)
    denormal = torch.tensor([1e-40], dtype=torch.float32)
    assert (denormal * 1.0).item() != 0.0
    with denormals_flushed(cpu):
        assert (denormal * 1.0).item() == 0.0  # flushed to zero while training
    assert (denormal * 1.0).item() != 0.0  # and left as it was for the caller's code


def test_bench_config_checks_and_report_helpers():
    for bad in (dict(size="huge"), dict(families=("gru",)), dict(variants=("turbo",)), dict(budget_s=0),
                dict(windows=0), dict(threads=0)):
        with pytest.raises(LabkitError):
            BenchConfig(**bad).check()
    curve = [{"train_s": 10.0, "val_ppl": 300.0}, {"train_s": 20.0, "val_ppl": 120.0}]
    assert time_to(curve, 150.0) == 20.0 and time_to(curve, 100.0) is None
    result = {"machine": {"processor": "cpu", "threads": 1, "torch": "x", "matmul_peak_fp32": 1e9,
                          "matmul_peak_bf16": None},
              "families": {"lstm": {"variants": {"reference": {
                  "precision": "fp32", "parameters": 10, "tokens_per_s": 5.0, "peak_rss_mb": None}}}}}
    text = table(result)
    assert "reference" in text and "fp32 1 GFLOP/s" in text


@pytest.mark.slow
def test_tiny_bench_runs_end_to_end_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--size", "tiny", "--variants", "reference,default,fastest", "--budget-variants", "reference,fastest",
            "--budget", "2", "--windows", "2", "--window", "0.2", "--evals", "2", "--eval-tokens", "1000",
            "--gen-tokens", "8", "--threads", "1", "--quiet", "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "labkit", "bench", *args], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "tok/s" in done.stdout and f"results: {out}" in done.stdout
    result = json.loads(out.read_text())
    assert result["machine"]["threads"] == 1
    assert result["machine"]["matmul_peak_fp32"] > 0
    for family in ("lstm", "transformer"):
        rows = result["families"][family]["variants"]
        assert list(rows) == ["reference", "default", "fastest"]
        for name, row in rows.items():
            assert row["tokens_per_s"] > 0 and len(row["windows_tokens_per_s"]) == 2
            assert row["peak_rss_mb"] > 0 and row["speedup_tokens_per_s"] > 0
            assert ("budget" in row) == (name in ("reference", "fastest"))
        assert rows["fastest"]["output"] == "adaptive" and rows["fastest"]["achieved_flops_per_s"] is None
        assert rows["reference"]["budget"]["train_s"] >= 2 and len(rows["reference"]["budget"]["curve"]) == 2
        assert rows["reference"]["time_to_reference_ppl_fraction"] is not None
        assert result["families"][family]["generation"]["new_tokens"] == 8
    assert result["families"]["transformer"]["generation"]["same_text"] is True
    tables = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_markdown.py"), str(out)],
                            capture_output=True, text=True, timeout=60, env=ENV)
    assert tables.returncode == 0, tables.stderr
    assert "| lstm | reference | fp32 |" in tables.stdout and "| transformer | fastest |" in tables.stdout
