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
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from labkit.atomic import write_atomic
from labkit.bench.names import FAMILIES, SIZES, VARIANTS
from labkit.bench.reference import ReferenceTrainer, build_reference, load_labkit_weights
from labkit.data.lm import DataConfig, LMData, load_lm_data
from labkit.device import cpu_has_bf16, pick_device, resolve_precision, tune_for_training
from labkit.errors import LabkitError
from labkit.models import build_model, config_from_dict, count_parameters
from labkit.presets import resolve_preset
from labkit.train.schedule import PlateauDivider, scheduled_lr
from labkit.train.trainer import TrainConfig, Trainer

PROMPT = "the history of the city begins in the"


@dataclass
class BenchConfig:
    size: str = "classic"
    families: tuple[str, ...] = FAMILIES
    variants: tuple[str, ...] = ("reference", "fp32", "default", "adaptive", "fastest")
    budget_variants: tuple[str, ...] = ("reference", "default", "fastest")  # trained for budget_s each
    budget_s: float = 120.0  # training time per variant for the perplexity comparison
    windows: int = 7  # timed windows per variant for tokens/s
    window_s: float = 2.0  # about this long each
    evals: int = 10  # validation points along each budget
    eval_tokens: int = 20_000
    gen_tokens: int = 512
    threads: int | None = None
    device: str = "auto"
    corpus: str | None = None  # default: wikitext-2, or synthetic for the tiny size
    data_dir: str | None = None
    train_tokens: int = 0  # 0: all
    target_ppl: float | None = None  # also report the time each variant needs to reach this
    seed: int = 1234
    progress: bool = True

    def check(self) -> None:
        if self.size not in SIZES:
            raise LabkitError(f"unknown size {self.size!r}; use one of {', '.join(SIZES)}")
        for name, values, allowed in (("family", self.families, FAMILIES), ("variant", self.variants, VARIANTS),
                                      ("variant", self.budget_variants, VARIANTS)):
            bad = [v for v in values if v not in allowed]
            if bad or (not values and name == "family"):
                raise LabkitError(f"unknown {name} {', '.join(bad) or '(none)'}; use {', '.join(allowed)}")
        for name in ("budget_s", "window_s"):
            if not 0 < getattr(self, name) < math.inf:
                raise LabkitError(f"{name} must be a positive number of seconds")
        for name in ("windows", "evals", "eval_tokens"):
            if getattr(self, name) < 1:
                raise LabkitError(f"{name} must be at least 1")
        if self.gen_tokens < 0 or self.train_tokens < 0 or (self.threads is not None and self.threads < 1):
            raise LabkitError("gen_tokens and train_tokens must be >= 0, threads >= 1")


def say(config: BenchConfig, text: str) -> None:
    if config.progress:
        print(text, flush=True)


# --- the machine -------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float | None:
    """FLOP/s of a large square matrix product: the practical ceiling for these models."""
    n = 8192 if device.type == "cuda" else 1024
    try:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
    except RuntimeError:
        return None
    times = []
    for i in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        for _ in range(4 if device.type == "cuda" else 1):
            a @ b
        sync(device)
        if i:  # the first one warms up
            times.append((time.perf_counter() - start) / (4 if device.type == "cuda" else 1))
    return 2 * n ** 3 / statistics.median(times)


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "threads": torch.get_num_threads(), "cpu_bf16": cpu_has_bf16(),
                            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["processor"] = line.split(":", 1)[1].strip()
                break
        info["load_1min_start"] = os.getloadavg()[0]
    except OSError:
        pass
    info["matmul_peak_fp32"] = matmul_peak(device, torch.float32)
    info["matmul_peak_bf16"] = matmul_peak(device, torch.bfloat16)
    return info


class PeakMemory:
    """Peak resident memory of this process over a stretch of code. On Linux the kernel's
    high-water mark is reset first (/proc/self/clear_refs), so each variant gets its own peak;
    on CUDA the allocator's peak is read too."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.resettable = True
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.resettable = False
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.rss_mb = rss_peak_mb()
        self.cuda_mb = (torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None)


def rss_mb() -> float | None:
    return _status_mb("VmRSS")


def rss_peak_mb() -> float | None:
    peak = _status_mb("VmHWM")
    if peak is None:
        import resource

        scale = 1 if platform.system() == "Darwin" else 1024  # bytes on macOS, KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
    return peak


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# --- the variants ------------------------------------------------------------------------
@dataclass
class Recipe:
    family: str
    model: dict[str, Any]
    train: dict[str, Any]


def recipe_for(size: str, family: str) -> Recipe:
    preset = resolve_preset(f"{size}-{family}")
    return Recipe("rnn" if family == "lstm" else "transformer", preset["model"], preset["train"])


class Variant:
    """One way of training one model: `step()` runs one optimizer step at the learning rate
    the shared schedule gives for this variant's own step count and clock."""

    def __init__(self, name: str, recipe: Recipe, data: LMData, vocab_size: int, config: BenchConfig,
                 budget_s: float):
        self.name, self.recipe, self.config = name, recipe, config
        self.budget_s = budget_s
        model_cfg = dict(recipe.model, vocab_size=vocab_size)
        if name in ("adaptive", "fastest"):
            model_cfg |= {"output": "adaptive", "tie_weights": False}
        if name == "fastest":
            model_cfg["dropout"] = 0.0
        self.model_config = config_from_dict(model_cfg)
        t = recipe.train
        self.train_cfg = TrainConfig(**{**t, "max_steps": 10**9, "time_budget_s": budget_s, "eval_every": 10**9,
                                        "device": config.device, "seed": config.seed,
                                        "warmup_steps": min(t.get("warmup_steps", 0), 50),
                                        "precision": "fp32" if name == "fp32" else "auto",
                                        "compile": name == "compile"})
        torch.manual_seed(config.seed)
        model = build_model(self.model_config)  # the same initial weights for every variant
        self.device = pick_device(config.device)
        self.steps, self.elapsed = 0, 0.0
        if name == "reference":
            ref = build_reference(self.model_config)
            load_labkit_weights(ref, model)
            self.model = ref.to(self.device)
            self.trainer: Any = ReferenceTrainer(self.model, data.train.to(self.device),
                                                 self.train_cfg.to_dict(), recipe.family)
            self.precision = "fp32"
        else:
            self.trainer = Trainer(model, data, self.train_cfg)
            self.model = self.trainer.model
            self.precision = self.trainer.precision
        self.tokens_per_step = t["batch_size"] * t["seq_len"]

    @property
    def parameters(self) -> int:
        return count_parameters(self.model)

    def step(self) -> float:
        """One timed optimizer step; returns its seconds."""
        sync(self.device)
        start = time.perf_counter()
        if isinstance(self.trainer, ReferenceTrainer):  # the trainer's schedule, on this clock
            c = self.train_cfg
            plateau = PlateauDivider(c.lr) if c.schedule == "plateau" else None  # never divides: no evals
            self.trainer.step(scheduled_lr(c, self.steps, self.elapsed, plateau))
        else:
            self.trainer.elapsed = self.elapsed  # the trainer's schedule reads its clock
            self.trainer.train_step()
        sync(self.device)
        seconds = time.perf_counter() - start
        self.steps += 1
        self.elapsed += seconds
        return seconds

    def val_loss(self, stream: torch.Tensor) -> float:
        if isinstance(self.trainer, ReferenceTrainer):
            return self.trainer.evaluate(stream.to(self.device), self.train_cfg.eval_batch_size)
        return self.trainer.evaluate("valid")["loss"]  # LMData.valid is this stream (eval_tokens)

    def training_flops_per_token(self) -> int | None:
        """fwd + bwd = 3x the forward's matrix FLOPs; None for the adaptive softmax, whose cost
        depends on which words come (the figure would not compare)."""
        if getattr(self.model_config, "output", "softmax") != "softmax":
            return None
        return 3 * build_model_meta(self.model_config).flops_per_token(self.train_cfg.seq_len)


def build_model_meta(config: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(config)


# --- the measurements --------------------------------------------------------------------
def probe_memory(config: BenchConfig, family: str, name: str, steps: int = 5) -> dict[str, Any]:
    """Peak resident memory of this process while it trains variant `name` for a few steps
    (run in a fresh process by `measure_memory`). The high-water mark is reset after the data
    is loaded, so the peak is the training's, on top of what the process already holds."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    tune_for_training(device)
    data, _ = load_data(config)
    gc.collect()
    baseline = rss_mb()
    with PeakMemory(device) as mem:
        variant = Variant(name, recipe_for(config.size, family), data, data.tokenizer.vocab_size, config,
                          config.budget_s)
        for _ in range(steps):
            variant.step()
    return {"peak_rss_mb": mem.rss_mb, "baseline_rss_mb": baseline, "peak_cuda_mb": mem.cuda_mb,
            "rss_reset": mem.resettable}


def measure_memory(config: BenchConfig, family: str, name: str) -> dict[str, Any]:
    """`probe_memory` in a child process: in this one, memory freed by earlier variants stays
    mapped (the allocator keeps it for reuse) and would be counted again."""
    import subprocess
    import sys

    payload = json.dumps({"config": asdict(config) | {"progress": False}, "family": family, "name": name})
    done = subprocess.run([sys.executable, "-m", "labkit.bench.memory", payload], capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LabkitError(f"the memory probe for {family} {name} failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_throughput(variants: list[Variant], config: BenchConfig) -> dict[str, dict[str, Any]]:
    """Warm up, then `windows` timed windows per variant, taken in turn."""
    per_window: dict[str, int] = {}
    for v in variants:
        times = [v.step() for _ in range(3)]  # warm-up: allocator, caches, compilation
        per_window[v.name] = max(1, round(config.window_s / max(min(times), 1e-6)))
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    for w in range(config.windows):
        for v in variants:
            seconds = sum(v.step() for _ in range(per_window[v.name]))
            samples[v.name].append(per_window[v.name] * v.tokens_per_step / seconds)
        say(config, f"  window {w + 1}/{config.windows}: " + ", ".join(
            f"{name} {s[-1]:,.0f}" for name, s in samples.items()) + " tokens/s")
    return {name: {"tokens_per_s": statistics.median(s), "windows_tokens_per_s": [round(x, 1) for x in s],
                   "steps_per_window": per_window[name]} for name, s in samples.items()}


def measure_budget(variants: list[Variant], stream: torch.Tensor, config: BenchConfig) -> dict[str, dict[str, Any]]:
    """Train every variant for `budget_s` of its own training time, one step each in turn;
    validate at `evals` evenly spaced points of each clock (not counted in it)."""
    curves: dict[str, list[tuple[float, float]]] = {v.name: [] for v in variants}
    marks = {v.name: 1 for v in variants}
    active = list(variants)
    while active:
        for v in list(active):
            v.step()
            if v.elapsed >= config.budget_s * marks[v.name] / config.evals:
                loss = v.val_loss(stream)
                curves[v.name].append((round(v.elapsed, 2), loss))
                say(config, f"  {v.name}: {v.elapsed:6.1f} s, step {v.steps}, val ppl {math.exp(min(loss, 50)):,.1f}")
                marks[v.name] += 1
                if v.elapsed >= config.budget_s:
                    active.remove(v)
    result = {}
    for v in variants:
        curve = curves[v.name]
        result[v.name] = {"steps": v.steps, "tokens": v.steps * v.tokens_per_step, "train_s": round(v.elapsed, 2),
                          "val_loss": curve[-1][1], "val_ppl": math.exp(min(curve[-1][1], 50)),
                          "curve": [{"train_s": t, "val_ppl": math.exp(min(loss, 50))} for t, loss in curve]}
    return result


def time_to(curve: list[dict[str, float]], ppl: float) -> float | None:
    """Training seconds at the first validation point at or below `ppl` (None: never)."""
    return next((p["train_s"] for p in curve if p["val_ppl"] <= ppl), None)


def measure_eval_speed(v: Variant, stream: torch.Tensor) -> float:
    sync(v.device)
    start = time.perf_counter()
    v.val_loss(stream)
    sync(v.device)
    return (stream.numel() - 1) / (time.perf_counter() - start)


def measure_generation(recipe: Recipe, vocab_size: int, tokenizer: Any, config: BenchConfig) -> dict[str, Any]:
    """Greedy decoding of `gen_tokens` new tokens, with and without the KV cache (Transformer;
    the LSTM has only its state). The Transformer's context is stretched to hold the prompt and
    every new token: past its context a learned-position model must re-read its whole window for
    each token, cache or not."""
    from labkit.generate import SamplingConfig, generate

    n = config.gen_tokens
    prompt_tokens = len(tokenizer.encode(PROMPT))
    model_cfg = dict(recipe.model, vocab_size=vocab_size)
    if recipe.family == "transformer":
        model_cfg["context_length"] = max(model_cfg["context_length"], prompt_tokens + n + 1)
    torch.manual_seed(config.seed)
    model = build_model(config_from_dict(model_cfg)).to(pick_device(config.device)).eval()
    sampling = SamplingConfig(temperature=0, max_tokens=n, stop_at_eos=False)
    generate(model, tokenizer, PROMPT, SamplingConfig(temperature=0, max_tokens=4))  # warm-up
    result: dict[str, Any] = {"new_tokens": n, "prompt_tokens": prompt_tokens,
                              "context_length": model_cfg.get("context_length")}
    cached = generate(model, tokenizer, PROMPT, sampling, use_cache=True)
    result["cached_tokens_per_s"] = cached.tokens_per_second
    if recipe.family == "transformer":
        plain = generate(model, tokenizer, PROMPT, sampling, use_cache=False)
        result["recompute_tokens_per_s"] = plain.tokens_per_second
        result["same_text"] = [t.id for t in plain.tokens] == [t.id for t in cached.tokens]
        result["speedup"] = cached.tokens_per_second / plain.tokens_per_second
    return result


# --- the whole run -----------------------------------------------------------------------
def load_data(config: BenchConfig) -> tuple[LMData, Any]:
    corpus = config.corpus or ("synthetic" if config.size == "tiny" else "wikitext-2")
    data = load_lm_data(DataConfig(corpus=corpus, data_dir=config.data_dir, train_tokens=config.train_tokens or None,
                                   eval_tokens=config.eval_tokens))
    return data, data.tokenizer


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
    # Process-wide (denormals, the allocator): set once here so that every row, the reference's
    # included, runs under them; their own gain is measured apart (docs/benchmarks.md).
    tune_for_training(device)
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


# --- the report --------------------------------------------------------------------------
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


__all__ = ["BenchConfig", "run", "table", "write_result"]
