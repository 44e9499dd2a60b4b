"""Laptop recipes against the classic presets: each trained for the same wall-clock budget on
WikiText-2, one after the other in this process, validated on the whole validation split at
evenly spaced points of its own training clock (word-level perplexity: every token scored once,
an RNN carrying its state, a Transformer in sliding windows), then tested on the whole test split.

    LABKIT_DATA=../shared/data python benchmarks/laptop.py --budget 10m --out runs/laptop.json \
        laptop-lstm laptop-gru laptop-transformer classic-lstm classic-transformer
    python benchmarks/laptop.py --plot runs/laptop.json docs/figures/laptop.png

`--set key=value` changes one setting of every recipe (model, train or data field), for trying
variants; each run's card records everything it used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from labkit.cli.common import duration
from labkit.data import DataConfig, load_lm_data
from labkit.models import config_from_dict
from labkit.presets import resolve_preset
from labkit.runs import read_metrics
from labkit.train import TrainConfig
from labkit.train.pretrain import pretrain


def value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(name: str, preset: dict[str, dict[str, Any]], budget: float, evals: int, root: Path,
        changes: dict[str, Any], data_cache: dict) -> dict[str, Any]:
    parts = {part: dict(values) for part, values in preset.items()}
    for key, v in changes.items():
        part = next((p for p in ("model", "train", "data") if key in parts[p] or key in FIELDS[p]), None)
        if part is None:
            raise SystemExit(f"--set {key}: not a model, train or data setting")
        parts[part][key] = v
    data_config = DataConfig.from_dict({**parts["data"], "train_tokens": None, "eval_tokens": None})
    key = json.dumps(data_config.to_dict(), sort_keys=True)
    if key not in data_cache:
        data_cache.clear()  # one corpus in memory at a time
        data_cache[key] = load_lm_data(data_config)
    data = data_cache[key]
    # Steps cannot be known ahead for a time budget: evaluate by training time instead.
    train = TrainConfig.from_dict({**parts["train"], "max_steps": 10**7, "time_budget_s": budget,
                                   "eval_every": 10**7, "eval_every_s": budget / evals, "log_every": 50})
    model = config_from_dict({**parts["model"], "vocab_size": data.tokenizer.vocab_size})
    out = root / name
    if out.exists():
        shutil.rmtree(out)
    load, started = os.getloadavg()[0], time.time()
    card = pretrain(model, train, data_config, out, data=data, callbacks=[Say()])
    records = read_metrics(out / "metrics.jsonl")
    curve = [{"elapsed_s": r["elapsed_s"], "tokens": r["tokens"], "val_ppl": r["val_word_ppl"]}
             for r in records if "val_loss" in r]
    return {"name": name, "card": card, "curve": curve, "settings": parts, "wall_s": time.time() - started,
            "load_start": load, "load_end": os.getloadavg()[0]}


class Say:
    def on_eval(self, trainer: Any, record: dict[str, Any]) -> None:
        print(f"  {trainer.run.name}: {record['elapsed_s']:6.0f} s, step {record['step']}, "
              f"{record['tokens']:,} tokens, val ppl {record['val_word_ppl']:,.1f}", flush=True)


FIELDS = {"model": {"cell", "d_embed", "d_hidden", "n_layers", "dropout", "tie_weights", "output", "adaptive_cutoffs",
                    "d_model", "n_heads", "d_ff", "context_length", "activation"},
          "train": set(TrainConfig.__dataclass_fields__), "data": set(DataConfig.__dataclass_fields__)}


def plot(results_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(results_path.read_text())
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    for r in results["runs"]:
        xs = [p["elapsed_s"] / 60 for p in r["curve"]]
        ys = [p["val_ppl"] for p in r["curve"]]
        ax.plot(xs, ys, marker="o", markersize=3, label=f"{r['name']} ({ys[-1]:.0f})")
    ax.axhline(200, color="grey", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_ylim(top=min(3000, ax.get_ylim()[1]))
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("validation perplexity (word level)")
    ax.set_title("WikiText-2 on a 2-core CPU: laptop recipes against the classic presets", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("presets", nargs="*", help="presets: laptop-lstm, classic-transformer, ...")
    parser.add_argument("--budget", type=duration, default=600.0, help="training time per recipe (default: 10m)")
    parser.add_argument("--evals", type=int, default=10, help="validation points along the budget")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a setting")
    parser.add_argument("--suffix", default="", help="added to each run's name")
    parser.add_argument("--runs-dir", default="runs/laptop")
    parser.add_argument("--out", default=None, help="append the results to this JSON file")
    parser.add_argument("--plot", nargs=2, metavar=("RESULTS", "PNG"), help="draw a results file and stop")
    args = parser.parse_args()
    if args.plot:
        plot(Path(args.plot[0]), Path(args.plot[1]))
        return
    changes = dict((k, value(v)) for k, v in (s.split("=", 1) for s in args.set))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}", flush=True)
    cache: dict = {}
    for name in args.presets:
        result = run(name + args.suffix, resolve_preset(name), args.budget, args.evals, Path(args.runs_dir), changes,
                     cache)
        c = result["card"]
        print(f"{result['name']}: {c['steps']:,} steps, {c['tokens_seen']:,} tokens ({c['tokens_per_s']:,.0f}/s), "
              f"best val ppl {c['best_val_ppl']:,.1f}, test ppl {c['test_word_ppl']:,.1f}; "
              f"load {result['load_start']:.2f} -> {result['load_end']:.2f}", flush=True)
        if args.out:
            path = Path(args.out)
            old = json.loads(path.read_text()) if path.exists() else {"runs": []}
            old["runs"].append(result)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(old, indent=1, default=float))


if __name__ == "__main__":
    main()
