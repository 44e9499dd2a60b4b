"""`labkit bench`: the plain reference against labkit's training paths, side by side.

One process, one machine, the same data, the same initial weights and the same learning-rate
schedule for every variant of a family:

- `reference`: the textbook loop (labkit.bench.reference): eager fp32, full logits, plain
  cross-entropy, the per-tensor optimizer.
- `fp32`: labkit's training path held to fp32: the chunked loss (models/loss.py), the fused
  optimizer, denormals flushed.
- `default`: labkit's default path, what `labkit pretrain` does: the same plus bf16 autocast
  where the hardware has bf16 matrix units (CUDA, CPUs with AVX-512 BF16 or AMX). Same model,
  same full softmax as the reference.
- `adaptive`: the default path with an adaptive softmax output layer. A different model: its
  perplexity is its own row.
- `fastest`: `adaptive` without dropout, a configuration for runs far shorter than an epoch
  (where dropout only slows learning); without dropout a Transformer's attention also runs in
  torch's fused kernel.
- `compile`: the default path under torch.compile (GPU runs).

Measured: training tokens/s (median of timed windows taken in turn, so that a change in the
machine's load falls on every variant alike), peak resident memory, achieved FLOP/s against this
machine's measured matrix-multiply peak, validation perplexity after the same wall-clock budget
(each variant on its own clock, steps taken in turn), the time each needed to reach the
reference's final perplexity, evaluation tokens/s, and generation tokens/s with and without the
KV cache.
"""

from __future__ import annotations

import gc
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from labkit.atomic import write_atomic
from labkit.bench import VARIANTS
from labkit.bench.measure import (
    machine,
    measure_budget,
    measure_eval_speed,
    measure_generation,
    measure_memory,
    measure_throughput,
    rss_mb,
    time_to,
)
from labkit.bench.variants import BenchConfig, Variant, load_data, recipe_for, say
from labkit.data.lm import LMData
from labkit.device import pick_device, resolve_precision, training_memory


def run_family(family: str, data: LMData, config: BenchConfig) -> dict[str, Any]:
    recipe = recipe_for(config.size, family)
    vocab = data.tokenizer.vocab_size
    stream = data.valid  # the first eval_tokens of the validation split
    names = [n for n in VARIANTS if n in config.variants]
    if recipe.family == "rnn" and recipe.model.get("cell") != "lstm":
        names = [n for n in names if n != "reference"]

    def make(name: str) -> Variant:
        return Variant(name, recipe, data, vocab, config, config.budget_s)

    out: dict[str, Any] = {"recipe": {"model": recipe.model, "train": recipe.train}, "variants": {}}
    say(config, f"[{family}] peak memory, one variant at a time")
    memory = {name: measure_memory(config, family, name) for name in names}
    say(config, f"[{family}] training tokens/s")
    variants = [make(name) for name in names]
    speed = measure_throughput(variants, config)
    for v in variants:
        flops = v.training_flops_per_token()
        achieved = flops * speed[v.name]["tokens_per_s"] if flops else None
        out["variants"][v.name] = {"precision": v.precision, "parameters": v.parameters,
                                   "output": getattr(v.model_config, "output", "softmax"),
                                   **speed[v.name], **memory[v.name], "training_flops_per_token": flops,
                                   "achieved_flops_per_s": achieved}
    del variants
    gc.collect()
    trained = [n for n in names if n in config.budget_variants]
    if trained:
        say(config, f"[{family}] validation perplexity after {config.budget_s:g} s of training each")
        variants = [make(name) for name in trained]
        budget = measure_budget(variants, stream, config)
        for v in variants:
            row = out["variants"][v.name]
            row["budget"] = budget[v.name]
            row["eval_tokens_per_s"] = measure_eval_speed(v, stream)
        del variants
        gc.collect()
    rows = out["variants"]
    if "reference" in rows:
        ref = rows["reference"].get("budget")
        for row in rows.values():
            row["speedup_tokens_per_s"] = row["tokens_per_s"] / rows["reference"]["tokens_per_s"]
            if ref and "budget" in row:
                reached = time_to(row["budget"]["curve"], ref["val_ppl"])
                row["time_to_reference_ppl_s"] = reached
                row["time_to_reference_ppl_fraction"] = reached / ref["train_s"] if reached is not None else None
    if config.target_ppl:
        for row in rows.values():
            if "budget" in row:
                row["time_to_target_ppl_s"] = time_to(row["budget"]["curve"], config.target_ppl)
    if config.gen_tokens:
        say(config, f"[{family}] generation of {config.gen_tokens} tokens")
        out["generation"] = measure_generation(recipe, vocab, data.tokenizer, config)
    return out


def run(config: BenchConfig) -> dict[str, Any]:
    config.check()
    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    # The allocator's setting for the whole benchmark, so that every row, the reference's included,
    # runs under it; its own gain is measured apart (docs/benchmarks.md).
    with training_memory(device):
        return _run(config, device)


def _run(config: BenchConfig, device: torch.device) -> dict[str, Any]:
    say(config, f"labkit bench: {config.size} sizes on {device}, {torch.get_num_threads()} threads; "
                f"default precision here: {resolve_precision('auto', device)}")
    data, _ = load_data(config)
    result: dict[str, Any] = {"config": asdict(config), "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "baseline_rss_mb": rss_mb()}
    result["machine"] = machine(device)
    result["families"] = {f: run_family(f, data, config) for f in config.families}
    try:
        result["machine"]["load_1min_end"] = os.getloadavg()[0]
    except OSError:
        pass
    return result


# --- the report: the table it prints and the JSON it writes --------------------------------------
def _fmt(value: Any, spec: str = ",.0f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    peaks = [p for p in (m.get("matmul_peak_fp32"), m.get("matmul_peak_bf16"))]
    lines = [f"machine: {m.get('gpu') or m.get('processor')}, {m['threads']} threads, torch {m['torch']}; "
             f"matmul peak fp32 {_fmt(peaks[0] and peaks[0] / 1e9)} GFLOP/s, "
             f"bf16 {_fmt(peaks[1] and peaks[1] / 1e9)} GFLOP/s"]
    head = (f"{'family':<12}{'variant':<10}{'prec':<6}{'params':>12}{'tok/s':>10}{'x ref':>7}{'peak MB':>9}"
            f"{'GFLOP/s':>9}{'%fp32':>7}{'%bf16':>7}{'val ppl':>9}{'t->ref':>8}{'eval tok/s':>11}")
    lines += [head, "-" * len(head)]
    for family, f in result["families"].items():
        for name, r in f["variants"].items():
            achieved = r.get("achieved_flops_per_s")
            frac = r.get("time_to_reference_ppl_fraction")
            lines.append(
                f"{family:<12}{name:<10}{r['precision']:<6}{r['parameters']:>12,}{r['tokens_per_s']:>10,.0f}"
                f"{_fmt(r.get('speedup_tokens_per_s'), '.2f'):>7}{_fmt(r.get('peak_rss_mb')):>9}"
                f"{_fmt(achieved and achieved / 1e9, ',.1f'):>9}"
                f"{_fmt(achieved and peaks[0] and 100 * achieved / peaks[0], '.0f'):>7}"
                f"{_fmt(achieved and peaks[1] and 100 * achieved / peaks[1], '.0f'):>7}"
                f"{_fmt(r.get('budget', {}).get('val_ppl'), ',.1f'):>9}"
                f"{_fmt(frac, '.0%'):>8}{_fmt(r.get('eval_tokens_per_s')):>11}")
        g = f.get("generation")
        if g:
            text = f"  generation, {g['new_tokens']} new tokens: cached {g['cached_tokens_per_s']:,.1f} tokens/s"
            if "recompute_tokens_per_s" in g:
                text += (f", recomputing {g['recompute_tokens_per_s']:,.1f} tokens/s ({g['speedup']:.1f}x, "
                         f"same text: {g['same_text']})")
            lines.append(text)
    return "\n".join(lines)


def write_result(result: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(result, indent=2, default=float) + "\n")
    return path
