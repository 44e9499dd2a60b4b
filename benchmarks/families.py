"""The LSTM against the Transformer with the laptop recipes, on budgets matched two ways.

    LABKIT_DATA=../shared/data python benchmarks/families.py --budget 10m --seeds 0 1 --out runs/families.json
    python benchmarks/families.py --table runs/families.json
    python benchmarks/families.py --plot runs/families.json docs/figures/families.png
    python benchmarks/families.py --reanalyse runs/families.json   # read the saved runs again

For each seed: both recipes train for the same wall-clock time (`--budget`); then the family that
spent more training FLOPs in that time trains again on the other's FLOPs (each model reads the
tokens that cost it that much, with its schedule fitted to those steps), so the other family's
run is also its matched-FLOPs run. Every run is then read the same way:

- validation and test perplexity, word level, every token once (the LSTM carrying its state, the
  Transformer in sliding windows of its context with a stride of half of it);
- loss by position: the mean next-token loss at each position of 128-token validation windows
  read from a fresh start, so position t has t tokens of context;
- agreement by distance: labkit's synthetic agreement sentences ("the dog near the cats ...")
  in WikiText-2's words, every gap noun an attractor, those with a word outside the vocabulary
  left out: is the agreeing verb more probable than the other form?
- copy by length: N distinct frequent WikiText-2 words, ".", the same words again; the share of
  the repeated words (after the first) whose greedy prediction is right, and the gain: the mean
  loss (nats) of the same second halves after a first half of other words minus after their own
  words (> 0: the model reads the words back from its context; in-context copying).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from labkit.cli.common import duration
from labkit.data import DataConfig, load_lm_data
from labkit.data.synthetic import agreement_items
from labkit.experiments import match_budgets
from labkit.inspect.context import loss_by_position
from labkit.inspect.probes import agreement_accuracy, copy_accuracy, in_vocabulary, overall, word_copy_items
from labkit.models import config_from_dict
from labkit.presets import resolve_preset
from labkit.runs import load_run
from labkit.train import TrainConfig

RECIPES = {"lstm": "laptop-lstm", "transformer": "laptop-transformer"}
DISTANCES = (0, 2, 4, 6, 8, 10, 12)
LENGTHS = (2, 4, 8, 16, 24, 32)
BLOCK = 128
WINDOWS = 256  # validation windows read by position: the first 32,768 tokens


def configs(seed: int, evals: int, budget: float, vocab_size: int) -> dict[str, tuple[Any, TrainConfig]]:
    out = {}
    for family, preset_name in RECIPES.items():
        preset = resolve_preset(preset_name)
        train = TrainConfig.from_dict({**preset["train"], "seed": seed, "eval_every_s": budget / evals,
                                       "eval_every": 10**7})
        out[family] = (config_from_dict({**preset["model"], "vocab_size": vocab_size}), train)
    return out


@torch.no_grad()
def analyse(path: Path, data: Any, n_items: int) -> dict[str, Any]:
    run = load_run(path)
    model, tok = run.model.eval(), run.tokenizer
    card = run.run.read_card()
    agreement = agreement_accuracy(model, tok, in_vocabulary(tok, agreement_items(n_items, DISTANCES, attract=1.0)))
    copying = copy_accuracy(model, tok, word_copy_items(tok, data.train, n_items, LENGTHS))
    control = copy_accuracy(model, tok, word_copy_items(tok, data.train, n_items, LENGTHS, control=True))
    for row, other in zip(copying, control):  # nats that having read the words saves: copying by the loss
        row["gain"] = other["loss"] - row["loss"]
    positions = loss_by_position(model, data.valid, BLOCK, max_windows=WINDOWS)
    return {"val_ppl": card["best_val_ppl"], "test_ppl": card.get("test_word_ppl", card["test_ppl"]),
            "tokens": card["tokens_seen"], "train_flops": card.get("train_flops"), "steps": card["steps"],
            "train_time_s": card["wall_time_s"], "agreement": agreement,
            "agreement_all": overall(agreement), "copy": copying, "copy_all": overall(copying),
            "copy_gain_all": overall(copying, "gain"),
            "loss_by_position": [float(x) for x in positions]}


def run_seed(seed: int, budget: float, evals: int, root: Path, data: Any, data_config: DataConfig,
             n_items: int) -> list[dict[str, Any]]:
    out = root / f"s{seed}"
    shutil.rmtree(out, ignore_errors=True)  # a run of this script replaces its own runs
    load = os.getloadavg()[0]
    runs = match_budgets(configs(seed, evals, budget, data.tokenizer.vocab_size), data_config, out, budget, data=data)
    rows = []
    for budget_kind, by_family in runs.items():
        for family, run in by_family.items():
            row = {"seed": seed, "budget": budget_kind, "family": family, "run": str(run.path),
                   **analyse(Path(run.path), data, n_items), "load": [load, os.getloadavg()[0]]}
            print(json.dumps({k: v for k, v in row.items() if k not in ("loss_by_position", "agreement", "copy")}),
                  flush=True)
            rows.append(row)
    return rows


def mean_sd(values: list[float], spec: str = ".1f") -> str:
    m = statistics.mean(values)
    return f"{m:{spec}}" + (f" ± {statistics.stdev(values):{spec}}" if len(values) > 1 else "")


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| budget | family | seeds | tokens | training FLOPs | val ppl | test ppl | loss at position 1 / 16 / 127 "
             "| agreement | copy | copy gain (nats) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["budget"], r["family"]), []).append(r)
    for (budget, family), rs in sorted(groups.items()):
        pos = " / ".join(mean_sd([r["loss_by_position"][p] for r in rs], ".2f") for p in (1, 16, BLOCK - 1))
        lines.append(f"| {budget} | {family} | {len(rs)} | {statistics.mean(r['tokens'] for r in rs):,.0f} | "
                     f"{statistics.mean(r['train_flops'] for r in rs):.3g} | {mean_sd([r['val_ppl'] for r in rs])} | "
                     f"{mean_sd([r['test_ppl'] for r in rs])} | {pos} | "
                     f"{mean_sd([100 * r['agreement_all'] for r in rs])} | {mean_sd([100 * r['copy_all'] for r in rs])} | "
                     f"{mean_sd([r['copy_gain_all'] for r in rs], '.2f')} |")
    return "\n".join(lines + ["", probe_table(groups, "agreement", "distance"), "",
                               probe_table(groups, "copy", "length"), "", probe_table(groups, "copy", "length", "gain")])


def probe_table(groups: dict[tuple[str, str], list[dict]], probe: str, x: str, value: str = "accuracy") -> str:
    """Accuracy (%) or the copy gain (nats) by distance or length, mean over the seeds, one row per
    budget and family."""
    keys = [r[x] for r in next(iter(groups.values()))[0][probe]]
    lines = [f"| {probe} {value}: budget, family | " + " | ".join(str(k) for k in keys) + " |",
             "| --- |" + " ---: |" * len(keys)]
    scale, spec = (100, ".1f") if value == "accuracy" else (1, ".2f")
    for (budget, family), rs in sorted(groups.items()):
        cells = [statistics.mean(scale * r[probe][i][value] for r in rs) for i in range(len(keys))]
        lines.append(f"| {budget}, {family} | " + " | ".join(f"{c:{spec}}" for c in cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    """Loss by position, agreement by distance and copy by length, mean over the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["budget"], r["family"]), []).append(r)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), dpi=110)
    for (budget, family), rs in sorted(groups.items()):
        style = dict(color="tab:blue" if family == "lstm" else "tab:orange", linestyle="-" if budget == "time" else "--",
                     label=f"{family}, same {budget}")
        loss = [statistics.mean(r["loss_by_position"][t] for r in rs) for t in range(BLOCK)]
        axes[0].plot(range(1, BLOCK + 1), loss, **style)
        for ax, probe, x, value, scale in ((axes[1], "agreement", "distance", "accuracy", 100),
                                           (axes[2], "copy", "length", "gain", 1)):
            xs = [row[x] for row in rs[0][probe]]
            ys = [statistics.mean(scale * r[probe][i][value] for r in rs) for i in range(len(xs))]
            ax.plot(xs, ys, marker="o", markersize=3, **style)
    axes[0].set(xlabel="tokens read in a 128-token window, from a fresh start", ylabel="validation loss (nats)",
                xscale="log", title="loss by position")
    axes[1].set(xlabel="words between subject and verb", ylabel="agreeing verb more probable (%)",
                ylim=(0, 100), title="agreement, every gap noun an attractor")
    axes[1].axhline(50, color="grey", linewidth=1)
    axes[2].set(xlabel="words copied", ylabel="loss saved by having read them (nats)",
                title="copying: control loss minus repeat loss")
    axes[2].axhline(0, color="grey", linewidth=1)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"laptop LSTM vs laptop Transformer, same training time and same FLOPs "
                 f"({len(next(iter(groups.values())))} seeds)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=duration, default=600.0, help="training time per recipe (default: 10m)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--evals", type=int, default=5, help="validations along each run")
    parser.add_argument("--items", type=int, default=100, help="probe items per distance or length")
    parser.add_argument("--runs-dir", default="runs/families")
    parser.add_argument("--out", default=None, help="append the results to this JSON file")
    parser.add_argument("--table", default=None, metavar="RESULTS", help="print a results file as a table and stop")
    parser.add_argument("--plot", nargs=2, default=None, metavar=("RESULTS", "PNG"), help="draw a results file and stop")
    parser.add_argument("--reanalyse", default=None, metavar="RESULTS",
                        help="read the runs of a results file again (their folders must still exist), rewrite it, stop")
    args = parser.parse_args()
    if args.reanalyse:
        path = Path(args.reanalyse)
        data = load_lm_data(DataConfig())
        read: dict[str, dict[str, Any]] = {}  # a run that is two rows (time and FLOPs) is read once
        rows = []
        for row in json.loads(path.read_text()):
            if row["run"] not in read:
                read[row["run"]] = analyse(Path(row["run"]), data, args.items)
            rows.append(row | read[row["run"]])
        path.write_text(json.dumps(rows, indent=1))
        print(table(rows))
        return 0
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if args.plot:
        plot(json.loads(Path(args.plot[0]).read_text()), Path(args.plot[1]))
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}", flush=True)
    data_config = DataConfig()
    data = load_lm_data(data_config)
    rows, started = [], time.time()
    for seed in args.seeds:
        rows += run_seed(seed, args.budget, args.evals, Path(args.runs_dir), data, data_config, args.items)
        if args.out:
            path = Path(args.out)
            old = json.loads(path.read_text()) if path.exists() else []
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(old + rows[-4:], indent=1))
    print(table(rows))
    print(f"{time.time() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
