"""What pretraining buys on SST-2, with the fine-tuning recipe's parts switched on and off.

For each base run (a pretrained language model), fine-tunes the pretrained network and the same
network from random weights on N labelled sentences (a seeded draw from SST-2 train, the same for
both), several seeds each, and reports SST-2 dev accuracy; `--ablate` also runs the recipe with
each of its parts undone, one at a time.

    LABKIT_DATA=../shared/data python benchmarks/finetune_recipe.py runs/laptop-lstm runs/laptop-transformer \
        --sizes 1000 --seeds 0 1 2 --set time_budget_s=80 --out runs/ft.json
    python benchmarks/finetune_recipe.py --table runs/ft.json
    python benchmarks/finetune_recipe.py --plot runs/ft.json docs/figures/finetune.png
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from labkit.data.tasks import TextEncoder, load_task
from labkit.runs import load_run
from labkit.train.finetune import FinetuneConfig, finetune, task_tokenizer

# One change at a time to the recipe (labkit's FinetuneConfig defaults, with any --set: full
# fine-tuning, no discriminative rates, a slanted triangular schedule, concat pooling, an LM step on
# all of the task's training text), each named by what it changes; a change that leaves the
# recipe as it is (the rates' two rows: one of them is the recipe) is not run.
ABLATIONS = {
    "no LM step on the task's text": dict(lm_steps=0),
    "LM step on the labelled sentences only": dict(lm_text="labelled"),
    "gradual unfreezing": dict(mode="gradual"),
    "no discriminative rates": dict(lr_decay=1.0),
    "discriminative rates of 2.6": dict(lr_decay=2.6),
    "cosine instead of slanted triangular": dict(schedule="cosine", warmup_frac=0.05),
    "the family's default pooling, not concat": dict(pooling=None),
}


def conditions(ablate: bool, frozen: bool, recipe: FinetuneConfig) -> dict[str, dict[str, Any]]:
    named = {"pretrained": dict(from_scratch=False), "scratch": dict(from_scratch=True)}
    if frozen:
        named["pretrained, frozen"] = dict(from_scratch=False, mode="frozen")
    if ablate:
        named |= {f"pretrained, {name}": dict(from_scratch=False, **change) for name, change in ABLATIONS.items()
                  if recipe.replace(**change) != recipe}
    return named


def run_all(bases: list[str], sizes: list[int | None], seeds: list[int], ablate: list[int | None] | None,
            frozen: bool, root: Path, changes: dict[str, Any], out: Path | None) -> list[dict[str, Any]]:
    results = []
    for base in bases:
        tokenizer = load_run(base).tokenizer
        for size in sizes:
            for seed in seeds:
                config0 = FinetuneConfig(**{**changes, "train_size": size, "seed": seed})
                task = load_task(config0.task, TextEncoder(task_tokenizer(config0, tokenizer)), data_dir=config0.data_dir,
                                 val_size=config0.val_size, train_size=size, seed=seed)
                first = seed == seeds[0]
                ablating = ablate is not None and first and (not ablate or size in ablate)
                for name, change in conditions(ablating, frozen and first, config0).items():
                    config = config0.replace(**change)
                    target = root / f"{Path(base).name}-n{size or 'all'}-s{seed}-{name.replace(', ', '-').replace(' ', '_')}"
                    if target.exists():
                        shutil.rmtree(target)
                    load, started = os.getloadavg()[0], time.perf_counter()
                    card = finetune(base, config, target, data=task)
                    total = time.perf_counter() - started  # the LM step on the task's text too
                    row = {"base": Path(base).name, "family": load_run(base).config["model"]["family"],
                           "labels": len(task.train), "seed": seed, "condition": name,
                           "accuracy": card["accuracy"], "val_accuracy": card["val_accuracy"], "steps": card["steps"],
                           "wall_time_s": card["wall_time_s"], "total_s": total,
                           "lm": {k: v for k, v in card.items() if k.startswith("lm_")},
                           "load": [load, os.getloadavg()[0]]}
                    print(json.dumps(row), flush=True)
                    results.append(row)
                    if out:
                        old = json.loads(out.read_text()) if out.exists() else []
                        out.write_text(json.dumps(old + [row], indent=1))
    return results


def value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def table(rows: list[dict[str, Any]]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["base"], r["labels"], r["condition"]), []).append(r)
    lines = ["| base run | labels | condition | SST-2 dev accuracy | runs | time per run |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    for (base, labels, condition), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        accs = [100 * r["accuracy"] for r in rs]
        spread = f" ± {statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
        lines.append(f"| {base} | {labels:,} | {condition} | {statistics.mean(accs):.1f}{spread} | {len(rs)} | "
                     f"{statistics.mean(r.get('total_s', r['wall_time_s']) for r in rs):.0f} s |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    """SST-2 dev accuracy against labelled sentences (log scale), one line per base run and condition
    of the learning curve (the ablations left out), the mean over seeds where there are several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in rows:
        if r["condition"] in ("pretrained", "scratch", "pretrained, frozen"):
            lines.setdefault((r["base"], r["condition"]), {}).setdefault(r["labels"], []).append(100 * r["accuracy"])
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    for (base, condition), points in sorted(lines.items()):
        xs = sorted(points)
        style = {"pretrained": "-", "scratch": ":", "pretrained, frozen": "--"}[condition]
        ax.plot(xs, [statistics.mean(points[x]) for x in xs], style, marker="o", markersize=3,
                label=f"{base}: {condition}")
    accuracy_axes(ax, "Fine-tuning on SST-2: pretrained against from scratch")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def accuracy_axes(ax: Any, title: str) -> None:
    """A fine-tuning curve's axes: labelled sentences (log) against SST-2 dev accuracy, chance at 50%."""
    ax.axhline(50, color="grey", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("labelled sentences")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bases", nargs="*", help="pretrained run directories")
    parser.add_argument("--sizes", nargs="+", default=["1000"], help="labelled sentences (or 'all')")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--ablate", nargs="*", default=None, metavar="SIZE",
                        help="also undo each part of the recipe (first seed; at these sizes, default: every size)")
    parser.add_argument("--frozen", action="store_true", help="also train the head alone on the frozen body (first seed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a FinetuneConfig setting")
    parser.add_argument("--runs-dir", default="runs/finetune-recipe")
    parser.add_argument("--out", default=None, help="append the results to this JSON file")
    parser.add_argument("--table", default=None, metavar="RESULTS", help="print a results file as a table and stop")
    parser.add_argument("--plot", nargs=2, metavar=("RESULTS", "PNG"), help="draw a results file's learning curve")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    if args.plot:
        plot(json.loads(Path(args.plot[0]).read_text()), Path(args.plot[1]))
        return
    changes = {k: value(v) for k, v in (s.split("=", 1) for s in args.set)}
    sizes = [None if s == "all" else int(s) for s in args.sizes]
    ablate = None if args.ablate is None else [None if s == "all" else int(s) for s in args.ablate]
    rows = run_all(args.bases, sizes, args.seeds, ablate, args.frozen, Path(args.runs_dir), changes,
                   Path(args.out) if args.out else None)
    print(table(rows))


if __name__ == "__main__":
    main()
