"""What `labkit bench` measures: the machine (its matrix-multiply peak, the ceiling its FLOP/s are
compared with, a description of it, peak memory), peak memory of each variant (in a fresh process:
`python -m labkit.bench.measure REQUEST` is that child), training tokens/s in timed windows taken
in turn, validation perplexity after a training budget, evaluation and generation speed."""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from labkit.bench.variants import PROMPT, BenchConfig, Recipe, Variant, load_data, recipe_for, say
from labkit.device import cpu_has_bf16, matmul_peak, pick_device, sync, training_memory
from labkit.errors import LabkitError
from labkit.models import build_model, config_from_dict


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


def probe_memory(config: BenchConfig, family: str, name: str, steps: int = 5) -> dict[str, Any]:
    """Peak resident memory of this process while it trains variant `name` for a few steps
    (run in a fresh process by `measure_memory`). The high-water mark is reset after the data
    is loaded, so the peak is the training's, on top of what the process already holds."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    with training_memory(device):
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
    done = subprocess.run([sys.executable, "-m", "labkit.bench.measure", payload], capture_output=True, text=True,
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


def child(argv: list[str]) -> None:
    """The memory child: one variant's peak memory, printed as JSON (see measure_memory)."""
    request = json.loads(argv[0])
    config = request["config"]
    for key in ("families", "variants", "budget_variants"):
        config[key] = tuple(config[key])
    print(json.dumps(probe_memory(BenchConfig(**config), request["family"], request["name"])))


if __name__ == "__main__":
    child(sys.argv[1:])
