"""Threads on a busy CPU: the notebooks' cpu-profile training with torch's default threads against
labkit's choice (labkit.device.cpu_threads: the default less the cores other work keeps busy), while
other work runs.

    LABKIT_DATA=... python benchmarks/threads.py [--load 1] [--rounds 3] [--steps 150] [--out FILE]

`--load N` starts N busy processes (pure-Python loops at normal priority: "other work") and waits
90 s (the load average, printed beside each trial, to see them too). Then, in one interleaved run (the order of the two
arms alternates each round), each family of the cpu profile (the tiny presets with a 10,000-word
vocabulary; WikiText-2 from $LABKIT_DATA, else the synthetic corpus) trains `--steps` steps in a
fresh process through labkit's pretrain, with torch's default threads, then with labkit's choice
computed at that moment; each process reports its training tokens/s. Printed: tokens/s per arm
(median over rounds), the ratio, the threads and the load average at each trial."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAMILIES = ("lstm", "transformer")


def child(family: str, steps: int, threads: int) -> None:
    """One trial (in its own process): `steps` steps of the cpu profile's `family`; prints tokens/s."""
    import torch

    torch.set_num_threads(threads)
    from labkit.data import DataConfig
    from labkit.models import config_from_dict
    from labkit.notebook import corpus_available
    from labkit.presets import resolve_preset
    from labkit.train import TrainConfig
    from labkit.train.pretrain import pretrain

    preset = resolve_preset("tiny", family)
    corpus = "wikitext-2" if corpus_available("wikitext-2", download=False) else "synthetic"
    data = DataConfig(**(preset["data"] | dict(corpus=corpus, max_vocab=10_000, train_tokens=400_000,
                                                eval_tokens=2_000)))
    train = TrainConfig.from_dict(preset["train"] | dict(max_steps=steps, eval_every=10**7, log_every=10,
                                                         device="cpu", time_budget_s=None, eval_every_s=None))
    with tempfile.TemporaryDirectory() as runs:
        card = pretrain(config_from_dict(preset["model"]), train, data, Path(runs) / family)
    print(json.dumps({"tokens_per_s": card["tokens_per_s"], "threads": torch.get_num_threads(), "corpus": corpus}))


def spin() -> None:
    while True:
        pass


def trial(family: str, steps: int, threads: int) -> dict:
    load = os.getloadavg()[0]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LABKIT_THREADS")}
    out = subprocess.run([sys.executable, __file__, "--child", family, str(steps), str(threads)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "load": round(load, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", type=int, default=1, help="busy processes started as other work (default 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", action="store_true",
                        help="against one thread, not labkit's choice (with --load 0: is one thread faster here?)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return

    from labkit.device import _TORCH_THREADS, cpu_threads

    other = ("one thread", lambda: 1) if args.one else ("labkit", cpu_threads)

    workers = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.load)]
    for w in workers:
        w.start()
    try:
        if workers:
            print(f"{args.load} busy process(es) started; 90 s for the load average to see them", flush=True)
            time.sleep(90)
        rows = []
        for r in range(args.rounds):
            for family in FAMILIES:
                arms = [("torch default", lambda: _TORCH_THREADS), other]
                for arm, threads in (arms if r % 2 == 0 else arms[::-1]):
                    row = {"round": r, "family": family, "arm": arm, **trial(family, args.steps, threads())}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        for w in workers:
            w.terminate()
    summary = {}
    print(f"\n{os.cpu_count()} cores, {args.load} busy process(es), {args.steps} steps a trial, "
          f"{args.rounds} rounds, interleaved")
    for family in FAMILIES:
        speed = {arm: statistics.median(r["tokens_per_s"] for r in rows if r["family"] == family and r["arm"] == arm)
                 for arm in ("torch default", other[0])}
        threads = {arm: sorted({r["threads"] for r in rows if r["family"] == family and r["arm"] == arm})
                   for arm in speed}
        summary[family] = {"tokens_per_s": speed, "threads": threads,
                           "ratio": speed[other[0]] / speed["torch default"]}
        print(f"{family:12s} torch default ({threads['torch default']} threads) {speed['torch default']:9,.0f} tok/s"
              f" | {other[0]} ({threads[other[0]]}) {speed[other[0]]:9,.0f} tok/s | {other[0]}/default "
              f"{summary[family]['ratio']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps({"load": args.load, "steps": args.steps, "rows": rows, "summary": summary},
                                       indent=1))


if __name__ == "__main__":
    main()
