"""What pretraining buys on SST-2, with the fine-tuning recipe's parts switched on and off.

For each base run (a pretrained language model), fine-tunes the pretrained network and the same
network from random weights on N labelled sentences (a seeded draw from SST-2 train, the same for
both), several seeds each, and reports SST-2 dev accuracy; `--ablate` also runs the recipe with
each of its parts undone, one at a time.

    LABKIT_DATA=../shared/data python benchmarks/finetune_recipe.py runs/laptop-lstm runs/laptop-transformer \
        --sizes 1000 --seeds 0 1 2 --out runs/ft.json
    python benchmarks/finetune_recipe.py --table runs/ft.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

from labkit.data.tasks import TextEncoder, load_task
from labkit.runs import load_run
from labkit.train.finetune import FinetuneConfig, finetune

# The recipe's parts, and what undoing each one means.
ABLATIONS = {
    "no LM step on the task's text": dict(lm_steps=0),
    "no gradual unfreezing": dict(mode="full"),
    "no discriminative rates": dict(lr_decay=1.0),
    "cosine instead of slanted triangular": dict(schedule="cosine", warmup_frac=0.05),
    "the family's default pooling, not concat": dict(pooling=None),
}


def conditions(ablate: bool) -> dict[str, dict[str, Any]]:
    named = {"pretrained": dict(from_scratch=False), "scratch": dict(from_scratch=True)}
    if ablate:
        named |= {f"pretrained, {name}": dict(from_scratch=False, **change) for name, change in ABLATIONS.items()}
    return named


def run_all(bases: list[str], sizes: list[int | None], seeds: list[int], ablate: bool, root: Path,
            changes: dict[str, Any], out: Path | None) -> list[dict[str, Any]]:
    results = []
    for base in bases:
        tokenizer = load_run(base).tokenizer
        for size in sizes:
            for seed in seeds:
                config0 = FinetuneConfig(**{**changes, "train_size": size, "seed": seed})
                task = load_task(config0.task, TextEncoder(tokenizer), data_dir=config0.data_dir,
                                 val_size=config0.val_size, train_size=size, seed=seed)
                for name, change in conditions(ablate and seed == seeds[0]).items():
                    config = config0.replace(**change)
                    target = root / f"{Path(base).name}-n{size or 'all'}-s{seed}-{name.replace(', ', '-').replace(' ', '_')}"
                    if target.exists():
                        shutil.rmtree(target)
                    load = os.getloadavg()[0]
                    card = finetune(base, config, target, data=task)
                    row = {"base": Path(base).name, "family": load_run(base).config["model"]["family"],
                           "labels": len(task.train), "seed": seed, "condition": name,
                           "accuracy": card["accuracy"], "val_accuracy": card["val_accuracy"], "steps": card["steps"],
                           "wall_time_s": card["wall_time_s"], "lm": {k: v for k, v in card.items() if k.startswith("lm_")},
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
                     f"{statistics.mean(r['wall_time_s'] for r in rs):.0f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bases", nargs="*", help="pretrained run directories")
    parser.add_argument("--sizes", nargs="+", default=["1000"], help="labelled sentences (or 'all')")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--ablate", action="store_true", help="also undo each part of the recipe (first seed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a FinetuneConfig setting")
    parser.add_argument("--runs-dir", default="runs/finetune-recipe")
    parser.add_argument("--out", default=None, help="append the results to this JSON file")
    parser.add_argument("--table", default=None, metavar="RESULTS", help="print a results file as a table and stop")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    changes = {k: value(v) for k, v in (s.split("=", 1) for s in args.set)}
    sizes = [None if s == "all" else int(s) for s in args.sizes]
    rows = run_all(args.bases, sizes, args.seeds, args.ablate, Path(args.runs_dir), changes,
                   Path(args.out) if args.out else None)
    print(table(rows))


if __name__ == "__main__":
    main()
