"""The LSTM against the Transformer with the laptop recipes, on budgets matched two ways.

    LABKIT_DATA=../shared/data python benchmarks/families.py --budget 10m --seeds 0 1 --out runs/families.json
    python benchmarks/families.py --table runs/families.json

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
  the repeated words (after the first) whose greedy prediction is right: in-context copying.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from labkit.cli.common import duration
from labkit.data import DataConfig, load_lm_data
from labkit.data.synthetic import SequenceItem, agreement_items
from labkit.experiments import compare_budget
from labkit.inspect.context import loss_by_position
from labkit.inspect.probes import agreement_accuracy, copy_accuracy, overall
from labkit.models import config_from_dict
from labkit.presets import resolve_preset
from labkit.runs import load_run
from labkit.train import TrainConfig

RECIPES = {"lstm": "laptop-lstm", "transformer": "laptop-transformer"}
DISTANCES = (0, 2, 4, 6, 8, 10, 12)
LENGTHS = (2, 4, 8, 16, 24, 32)
BLOCK = 128


def configs(seed: int, evals: int, budget: float, vocab_size: int) -> dict[str, tuple[Any, TrainConfig]]:
    out = {}
    for family, preset_name in RECIPES.items():
        preset = resolve_preset(preset_name)
        train = TrainConfig.from_dict({**preset["train"], "seed": seed, "eval_every_s": budget / evals,
                                       "eval_every": 10**7})
        out[family] = (config_from_dict({**preset["model"], "vocab_size": vocab_size}), train)
    return out


def copy_items(tokenizer: Any, train: torch.Tensor, n_per_length: int, seed: int = 0) -> list[SequenceItem]:
    """Copy lines of frequent plain words of the training text (no specials, no punctuation)."""
    counts = torch.bincount(train, minlength=tokenizer.vocab_size)
    words = [tokenizer.decode([int(i)]) for i in counts.argsort(descending=True)[:1500]]
    words = [w for w in words if w.isalpha() and w.islower()][:1000]
    rng, items = random.Random(seed), []
    for length in LENGTHS:
        for _ in range(n_per_length):
            first = rng.sample(words, length)
            # the first repeated word is a guess; each later one follows its earlier occurrence
            items.append(SequenceItem((*first, ".", *first), tuple(range(length + 2, 2 * length + 1)), length))
    return items


def known_agreement_items(tokenizer: Any, n_per_distance: int) -> list[Any]:
    items = agreement_items(n_per_distance, DISTANCES, seed=0, attract=1.0)
    unk = tokenizer.unk_id
    return [i for i in items if unk not in tokenizer.encode(f"{i.prefix} {i.correct} {i.wrong}")]


@torch.no_grad()
def analyse(path: Path, data: Any, n_items: int) -> dict[str, Any]:
    run = load_run(path)
    model, tok = run.model.eval(), run.tokenizer
    card = run.run.read_card()
    agreement = agreement_accuracy(model, tok, known_agreement_items(tok, n_items))
    copying = copy_accuracy(model, tok, copy_items(tok, data.train, n_items))
    positions = loss_by_position(model, data.valid, BLOCK, max_windows=256)
    return {"val_ppl": card["best_val_ppl"], "test_ppl": card.get("test_word_ppl", card["test_ppl"]),
            "tokens": card["tokens_seen"], "train_flops": card.get("train_flops"), "steps": card["steps"],
            "train_time_s": card.get("train_time_s", card["wall_time_s"]), "agreement": agreement,
            "agreement_all": overall(agreement), "copy": copying, "copy_all": overall(copying),
            "loss_by_position": [float(x) for x in positions]}


def run_seed(seed: int, budget: float, evals: int, root: Path, data: Any, data_config: DataConfig,
             n_items: int) -> list[dict[str, Any]]:
    rows = []
    for old in (root / f"time-s{seed}", root / f"flops-s{seed}"):
        shutil.rmtree(old, ignore_errors=True)  # a run of this script replaces its own runs
    both = configs(seed, evals, budget, data.tokenizer.vocab_size)
    load = os.getloadavg()[0]
    wall = compare_budget(both, data_config, root / f"time-s{seed}", seconds=budget, data=data)
    flops = {f: r.card["train_flops"] for f, r in wall.items()}
    richer = max(flops, key=flops.get)
    poorer = min(flops, key=flops.get)
    matched = compare_budget({richer: both[richer]}, data_config, root / f"flops-s{seed}", flops=flops[poorer],
                             data=data)
    for budget_kind, family, path in [("time", f, r.path) for f, r in wall.items()] + [
            ("flops", richer, matched[richer].path), ("flops", poorer, wall[poorer].path)]:
        row = {"seed": seed, "budget": budget_kind, "family": family, "run": str(path),
               **analyse(Path(path), data, n_items), "load": [load, os.getloadavg()[0]]}
        print(json.dumps({k: v for k, v in row.items() if k not in ("loss_by_position", "agreement", "copy")}),
              flush=True)
        rows.append(row)
    return rows


def mean_sd(values: list[float], spec: str = ".1f") -> str:
    m = statistics.mean(values)
    return f"{m:{spec}}" + (f" ± {statistics.stdev(values):{spec}}" if len(values) > 1 else "")


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| budget | family | seeds | tokens | training FLOPs | val ppl | test ppl | loss at position 1 / 16 / 127 "
             "| agreement | copy |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["budget"], r["family"]), []).append(r)
    for (budget, family), rs in sorted(groups.items()):
        pos = " / ".join(mean_sd([r["loss_by_position"][p] for r in rs], ".2f") for p in (1, 16, BLOCK - 1))
        lines.append(f"| {budget} | {family} | {len(rs)} | {statistics.mean(r['tokens'] for r in rs):,.0f} | "
                     f"{statistics.mean(r['train_flops'] for r in rs):.3g} | {mean_sd([r['val_ppl'] for r in rs])} | "
                     f"{mean_sd([r['test_ppl'] for r in rs])} | {pos} | "
                     f"{mean_sd([100 * r['agreement_all'] for r in rs])} | {mean_sd([100 * r['copy_all'] for r in rs])} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=duration, default=600.0, help="training time per recipe (default: 10m)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--evals", type=int, default=5, help="validations along each run")
    parser.add_argument("--items", type=int, default=100, help="probe items per distance or length")
    parser.add_argument("--runs-dir", default="runs/families")
    parser.add_argument("--out", default=None, help="append the results to this JSON file")
    parser.add_argument("--table", default=None, metavar="RESULTS", help="print a results file as a table and stop")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
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
