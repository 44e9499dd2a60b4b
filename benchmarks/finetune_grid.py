"""The fine-tuning lesson as a grid: SST-2 dev accuracy against labelled sentences, for every way
of starting the classifier, beside the bag-of-words yardstick, with seeds.

    LABKIT_DATA=../shared/data python benchmarks/finetune_grid.py --pretrain laptop-lstm=5000 laptop-transformer=1200 \
        --runs-dir runs/grid --out runs/grid.jsonl        # the bodies first (step-bound), then the grid
    LABKIT_DATA=../shared/data python benchmarks/finetune_grid.py runs/grid/laptop-lstm --out runs/grid.jsonl
    python benchmarks/finetune_grid.py --table runs/grid.jsonl
    python benchmarks/finetune_grid.py --plot runs/grid.jsonl docs/figures/finetune-grid.png

For each body (a pretrained language-model run) the language-model stage runs once per arm and is
shared by every fine-tuning run of that arm (labkit.train.finetune.lm_stage): `--lm-steps` steps on
all of SST-2's training text (labels unread), the body's vocabulary grown with the task's words:

- pretrained: the body, after its LM stage, every weight trained on the labels;
- task text only: a random body of the same shape, trained by the same LM stage alone (no WikiText);
- scratch: a random body, no LM stage;
- frozen pretrained / frozen random: only a head on standardised pooled features;
- bag of words: the yardstick (labkit.train.bow).

Every network trains the same number of steps at a label budget (`steps_for`: 10 epochs, at most two
epochs of all the labels), with no early stopping: the comparison is bound by steps, never by time.
Each row of the JSON lines file is one run (its card's figures, its time, the load average).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from finetune_recipe import accuracy_axes  # (a sibling script: benchmarks/ is on the path when run)

from labkit.data.tasks import TextEncoder, load_task
from labkit.runs import remove_run
from labkit.train.adapt import LMStage
from labkit.train.finetune import FinetuneConfig, finetune, lm_stage

SIZES = (100, 300, 1000, 3000, 10_000, None)  # None: every training sentence (65,349)
SEEDS = {100: (0, 1, 2), 300: (0, 1, 2), 1000: (0, 1, 2)}  # larger sizes: seed 0
ALL = 65_349
CONDITIONS = {  # name -> (the LM stage's arm, or None; FinetuneConfig changes)
    "pretrained": ("pretrained", {}),
    "task text only": ("task text only", dict(from_scratch=True, task_lm=True)),
    "scratch": (None, dict(from_scratch=True, lm_steps=0)),
    "frozen pretrained": ("pretrained", dict(mode="frozen")),
    "frozen random": (None, dict(from_scratch=True, lm_steps=0, mode="frozen")),
    "bag of words": (None, dict(baseline="bow")),
}
ARMS = {"pretrained": {}, "task text only": dict(from_scratch=True, task_lm=True)}


def steps_for(size: int | None, batch: int = 32) -> int:
    """10 epochs of the labels, at most two epochs of all of them (4,084 steps at batch 32)."""
    n = ALL if size is None else size
    return min(10 * math.ceil(n / batch), 2 * math.ceil(ALL / batch))


def pretrain_body(preset: str, steps: int, root: Path, out: Path, joint: bool = False) -> Path:
    """A body trained on all of WikiText-2 with a laptop recipe for `steps` steps (no time budget):
    validated every fifth of them on 20,000 tokens, on the whole split at the end. `joint`: its
    vocabulary is WikiText-2's and the task's words from the start (the words fine-tuning would add,
    FinetuneConfig.vocab_min_count times in SST-2's training sentences), their rows trained from
    random ones by pretraining, where they never occur as inputs: the other way to cover the task."""
    from labkit.data import DataConfig, load_lm_data
    from labkit.data.lm import corpus_lines, make_tokenizer
    from labkit.data.tasks import task_tokenizer
    from labkit.models import config_from_dict
    from labkit.presets import PRESETS
    from labkit.train import TrainConfig
    from labkit.train.pretrain import pretrain

    target = root / (f"{preset}-joint" if joint else preset)
    if (target / "card.json").exists():
        return target  # trained by an earlier call
    parts = PRESETS[preset]
    data = None
    if joint:
        config, corpus = FinetuneConfig(), DataConfig(**parts["data"])
        base = make_tokenizer(corpus, corpus_lines(corpus)["train"])  # the preset's own vocabulary, nothing encoded
        words = task_tokenizer(config.task, base, config.vocab_min_count, data_dir=config.data_dir,
                               val_size=config.val_size)
        data = load_lm_data(corpus, words)
    train = TrainConfig.from_dict({**parts["train"], "max_steps": steps, "time_budget_s": None, "eval_every_s": None,
                                   "eval_every": max(1, steps // 5), "val_tokens": 20_000, "warmup_share": None})
    started = time.perf_counter()
    card = pretrain(config_from_dict({**parts["model"], "vocab_size": 2}), train, DataConfig(**parts["data"]), target,
                    data=data)
    row = {"body": target.name, "vocab_size": data.tokenizer.vocab_size if data else None,
           "pretrained_steps": card["steps"], "val_ppl": card["best_val_ppl"], "test_ppl": card["test_ppl"],
           "tokens": card["tokens_seen"], "seconds": time.perf_counter() - started, "load": os.getloadavg()[0]}
    print(json.dumps(row), flush=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return target


def run_body(body: Path, lm_steps: int, root: Path, out: Path, conditions: list[str], sizes: list[int | None]) -> None:
    recipe = FinetuneConfig(lm_steps=lm_steps, patience=10**6, eval_every=200)
    stages = {}
    for arm in sorted({CONDITIONS[c][0] for c in conditions} - {None}):
        started = time.perf_counter()
        folder = root / f"{body.name}-lm-{arm.replace(' ', '_')}" / f"{lm_steps}-steps"
        stages[arm] = cached_stage(body, recipe.replace(**ARMS[arm]), folder)
        if stages[arm].info.get("cached"):
            continue
        row = {"body": body.name, "lm_stage": arm, "lm_steps": lm_steps, **stages[arm].info,
               "seconds": time.perf_counter() - started, "load": os.getloadavg()[0]}
        print(json.dumps(row), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    tokenizer = next(iter(stages.values())).tokenizer if stages else None
    for size in sizes:
        for seed in SEEDS.get(size, (0,)):
            config0 = recipe.replace(train_size=size, seed=seed, max_steps=steps_for(size), epochs=10**6)
            task = load_task("sst2", TextEncoder(tokenizer), data_dir=config0.data_dir, val_size=config0.val_size,
                             train_size=size, seed=seed) if tokenizer is not None else None
            for name in conditions:
                arm, change = CONDITIONS[name]
                config = config0.replace(**change)
                target = root / f"{body.name}-n{size or 'all'}-s{seed}-{name.replace(' ', '_')}"
                if target.exists():
                    remove_run(target)
                load, started = os.getloadavg()[0], time.perf_counter()
                card = finetune(body, config, target, data=task, stage=stages.get(arm))
                row = {"body": body.name, "condition": name, "labels": card["train_size"], "seed": seed,
                       "accuracy": card["accuracy"], "val_accuracy": card.get("val_accuracy"),
                       "predicted": [sum(r[j] for r in card["confusion_matrix"]) for j in range(2)],
                       "steps": card.get("steps"), "training_s": card.get("wall_time_s"),
                       "seconds": time.perf_counter() - started, "load": [load, os.getloadavg()[0]],
                       "oov_rate": card.get("oov_rate"), "vocab_added": card.get("vocab_added"),
                       "lm_steps": lm_steps if arm else None}
                print(json.dumps(row), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")


def cached_stage(body: Path, config: FinetuneConfig, folder: Path) -> LMStage:
    """The LM stage of `body` for one arm, made once and kept in `folder` (its weights as safetensors,
    what it did as JSON) for later calls of the grid with the same body and steps: the vocabulary is
    grown again from the task's text (the same words), the weights read back into that shape."""
    from safetensors.torch import load_model, save_model

    from labkit.runs import load_run
    from labkit.train.adapt import body_to_train, grown_words, task_tokenizer

    weights, info = folder / "body.safetensors", folder / "info.json"
    if info.exists() and json.loads(info.read_text()).get("lm_steps") == config.lm_steps:
        base = load_run(body)
        tokenizer = task_tokenizer(config, base.tokenizer)
        model = body_to_train(base.model, config, grown_words(base.tokenizer, tokenizer))
        load_model(model, weights, device=str(next(model.parameters()).device))
        return LMStage(model, tokenizer, {**json.loads(info.read_text()), "cached": True}, config.from_scratch,
                       config.task_lm)
    stage = lm_stage(body, config)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(stage.body, weights)
    info.write_text(json.dumps(stage.info))
    return stage


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(rows: list[dict[str, Any]]) -> str:
    runs = [r for r in rows if "condition" in r]
    bodies = sorted({r["body"] for r in runs})
    sizes = sorted({r["labels"] for r in runs})
    lines = []
    for body in bodies:
        lines += [f"\n{body}: SST-2 dev accuracy (%), mean ± sd over seeds (runs)", "",
                  "| condition | " + " | ".join(f"{s:,}" for s in sizes) + " |",
                  "| --- |" + " ---: |" * len(sizes)]
        for name in CONDITIONS:
            cells = []
            for size in sizes:
                accs = [100 * r["accuracy"] for r in runs if (r["body"], r["condition"], r["labels"]) == (body, name, size)]
                cells.append("" if not accs else f"{statistics.mean(accs):.1f}" +
                             (f" ± {statistics.stdev(accs):.1f} ({len(accs)})" if len(accs) > 1 else ""))
            if any(cells):
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for stage in (r for r in rows if r.get("body") == body and "lm_stage" in r and r.get("lm_steps")):
            lines.append(f"\nLM stage, {stage['lm_stage']}: {stage['lm_steps']:,} steps, {stage['lm_tokens']:,} tokens, "
                         f"SST-2 text perplexity {stage['lm_val_ppl_before']:,.1f} -> {stage['lm_val_ppl_after']:,.1f}, "
                         f"{stage['seconds']:.0f} s")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in rows if "condition" in r]
    bodies = sorted({r["body"] for r in runs})
    fig, axes = plt.subplots(1, len(bodies), figsize=(6.5 * len(bodies), 4.4), dpi=110, squeeze=False)
    for ax, body in zip(axes[0], bodies):
        for name in CONDITIONS:
            points: dict[int, list[float]] = {}
            for r in runs:
                if (r["body"], r["condition"]) == (body, name):
                    points.setdefault(r["labels"], []).append(100 * r["accuracy"])
            if points:
                xs = sorted(points)
                ax.plot(xs, [statistics.mean(points[x]) for x in xs], "--" if name == "bag of words" else "-",
                        marker="o", markersize=3, label=name)
        accuracy_axes(ax, body)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bodies", nargs="*", type=Path, help="pretrained language-model run directories")
    parser.add_argument("--pretrain", nargs="+", default=[], metavar="PRESET=STEPS",
                        help="first train these bodies into --runs-dir (laptop-lstm=5000 ...), then run the grid on them")
    parser.add_argument("--joint-vocab", action="store_true",
                        help="--pretrain bodies whose vocabulary holds the task's words from the start (PRESET-joint)")
    parser.add_argument("--lm-steps", type=int, default=1000, help="the shared LM stage's steps (default: 1000)")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS), metavar="NAME")
    parser.add_argument("--sizes", nargs="+", default=[str(s or "all") for s in SIZES])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/finetune-grid"))
    parser.add_argument("--out", type=Path, help="append one JSON line per run here")
    parser.add_argument("--table", type=Path, metavar="RESULTS", help="print a results file as tables and stop")
    parser.add_argument("--plot", nargs=2, type=Path, metavar=("RESULTS", "PNG"), help="draw a results file")
    args = parser.parse_args()
    if args.table:
        print(table(read(args.table)))
        return
    if args.plot:
        plot(read(args.plot[0]), args.plot[1])
        return
    if not args.out:
        parser.error("--out is needed to run the grid")
    sizes = [None if s == "all" else int(s) for s in args.sizes]
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    for spec in args.pretrain:
        preset, steps = spec.split("=")
        args.bodies.append(pretrain_body(preset, int(steps), args.runs_dir, args.out, args.joint_vocab))
    for body in args.bodies:
        run_body(body, args.lm_steps, args.runs_dir, args.out, args.conditions, sizes)
    print(table(read(args.out)))


if __name__ == "__main__":
    main()
