"""The app's demo models, measured: each stage's steps, wall clock and training time, and what the
models reached against the demo's goals (docs/results.md, "The demo models").

    LABKIT_DATA=../shared/data python benchmarks/demo.py --out runs/demo.json            # as the button trains
    LABKIT_DATA=../shared/data python benchmarks/demo.py --precision fp32 --out runs/demo-fp32.json
    LABKIT_DATA=../shared/data python benchmarks/demo.py --busy 4 --out runs/demo-busy.json  # beside 4 busy loops

    python benchmarks/demo.py --same RUN_A RUN_B      # two runs of one stage: the same losses?

`--precision fp32` is what a CPU without bf16 runs. `--busy N` starts N processes that spin on the
CPU for the whole demo (a loaded machine): the demo is bound by steps, so it makes the same models,
later (`--root` keeps the runs; `--same` compares a stage's losses with a quiet run's, over the
steps both logged). Each goal is printed met or missed; the JSON holds every card.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

from labkit.experiments import train_demo_models
from labkit.inspect.attention import capture_attention, head_stats
from labkit.runs import RunDir, load_run, read_metrics

DEFAULT_SENTENCE = "The game was released in Japan in 2010 and sold well ."  # the Attention page's first example
GOALS = {"lstm ppl": 250.0, "transformer ppl": 300.0, "accuracy": 0.70, "previous-token share": 0.5,
         "minutes": 5.0}


def spin() -> None:
    while True:
        pass


def previous_token_share(run: Path) -> tuple[float, int, int]:
    """The largest previous-token share of any head on the Attention page's default sentence."""
    loaded = load_run(run)
    capture = capture_attention(loaded.model, loaded.tokenizer, DEFAULT_SENTENCE)
    best = max(head_stats(capture.attention), key=lambda r: r["previous_token_share"])
    return best["previous_token_share"], best["layer"], best["head"]


def same(a: Path, b: Path) -> None:
    """The training and validation losses two runs logged at the same steps, and how far apart."""
    logged = []
    for run in (a, b):
        records = read_metrics(RunDir(run).metrics_path)
        logged.append(({r["step"]: r["loss"] for r in records if "loss" in r},
                       {r["step"]: r["val_loss"] for r in records if "val_loss" in r}))
    for what, i in (("training loss", 0), ("validation loss", 1)):
        steps = sorted(set(logged[0][i]) & set(logged[1][i]))
        gap = max((abs(logged[0][i][s] - logged[1][i][s]) for s in steps), default=float("nan"))
        print(f"{what}: {len(steps)} steps in common (up to {max(steps, default=0):,}), largest difference {gap:g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--same", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"), help="compare two runs' losses")
    parser.add_argument("--out", type=Path, help="the JSON of the figures and cards")
    parser.add_argument("--root", type=Path, help="where the runs go (default: a temporary folder, removed)")
    parser.add_argument("--precision", choices=("auto", "fp32"), default="auto")
    parser.add_argument("--busy", type=int, default=0, metavar="N", help="spin N processes beside the demo")
    args = parser.parse_args()
    if args.same:
        return same(*args.same)
    if args.out is None:
        parser.error("--out is needed to measure the demo")
    root = args.root or Path(tempfile.mkdtemp(prefix="labkit-demo-"))
    if args.root and root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} is not empty")
    busy = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for p in busy:
        p.start()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        cards = train_demo_models(root, precision=args.precision)
    finally:
        for p in busy:
            p.kill()
    total = time.perf_counter() - started
    result = {"precision": args.precision, "busy": args.busy, "load_before": load_before,
              "load_after": os.getloadavg()[0], "total_s": total, "cards": cards}
    lms = {c["family"]: (name, c) for name, c in cards.items() if c.get("kind") == "lm"}
    share, layer, head = previous_token_share(root / lms["transformer"][0])
    result["previous_token_share"] = {"share": share, "layer": layer, "head": head}
    print(f"demo: {total:.0f} s in all ({args.precision}, {args.busy} busy processes; load {load_before:.2f} before)")
    for name, c in cards.items():
        said = (f"val ppl {c['best_val_ppl']:.1f} (unigram {c['unigram_val_ppl']:.1f}), test {c['test_word_ppl']:.1f}"
                if c.get("kind") == "lm" else
                f"SST-2 dev accuracy {c['accuracy']:.1%}, predicted {[sum(col) for col in zip(*c['confusion_matrix'])]}")
        print(f"  {name}: {c['steps']:,} steps, {c['wall_clock_s']:.1f} s wall clock ({c['wall_time_s']:.1f} s "
              f"training), {said}")
    checks = {f"LSTM validation perplexity <= {GOALS['lstm ppl']:.0f}": lms["rnn"][1]["best_val_ppl"] <= GOALS["lstm ppl"],
              f"Transformer validation perplexity <= {GOALS['transformer ppl']:.0f}":
                  lms["transformer"][1]["best_val_ppl"] <= GOALS["transformer ppl"],
              f"every classifier >= {GOALS['accuracy']:.0%} and predicting both labels":
                  all(c["accuracy"] >= GOALS["accuracy"] and min(sum(col) for col in zip(*c["confusion_matrix"])) > 0
                      for c in cards.values() if c.get("kind") == "classifier"),
              f"a head with previous-token share >= {GOALS['previous-token share']} (L{layer} H{head}: {share:.3f})":
                  share >= GOALS["previous-token share"],
              f"at most {GOALS['minutes']:.0f} minutes in all": total <= 60 * GOALS["minutes"]}
    for goal, met in checks.items():
        print(f"  {'met' if met else 'MISSED'}: {goal}")
    result["goals"] = checks
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    if not args.root:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
