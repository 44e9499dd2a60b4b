"""`labkit demo`: train the app's demo models into a runs folder (what its button starts)."""

from __future__ import annotations

import argparse
from typing import Any

from labkit.cli.common import HelpFormatter
from labkit.demo import DEMO_BUDGET_S, DEMO_RUNS, DEMO_STEPS


class PrintEvals:
    """One line per evaluation, for the app's log of the demo."""

    def on_eval(self, trainer: Any, record: dict[str, Any]) -> None:
        print(f"{trainer.run.name}: step {record['step']}, val ppl {record['val_ppl']:.1f}", flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from labkit.experiments import train_demo_models

    # One thread: these models are too small to gain from more, and on a busy 2-core machine
    # (the app's server, other jobs) a second thread that waits for a core made training 100x
    # slower in our measurements.
    torch.set_num_threads(1)
    names = dict(zip(args.names, DEMO_RUNS.values())) if args.names else None
    cards = train_demo_models(args.root, steps=args.steps, budget_s=args.budget, corpus=args.corpus,
                              names=names, callbacks=[PrintEvals()])
    for name, card in cards.items():
        print(f"{name}: {card['steps']} steps, val ppl {card['best_val_ppl']:.1f}, "
              f"test ppl {card['test_ppl']:.1f}, {card['wall_time_s']:.0f}s", flush=True)
    return 0


def add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="train the app's demo models (a tiny LSTM and a tiny Transformer)",
                       formatter_class=HelpFormatter, description=(
                           "Train a tiny LSTM and a tiny Transformer into ROOT, one after the other: on "
                           "WikiText-2 if its files are\non disk, else on labkit's generated corpus. The app's "
                           "Train demo models button runs this."),
                       epilog="example:\n  labkit demo runs")
    p.add_argument("root", metavar="ROOT", help="the runs folder")
    p.add_argument("--steps", type=int, default=DEMO_STEPS, metavar="N", help="steps per model")
    p.add_argument("--budget", type=float, default=DEMO_BUDGET_S, metavar="S", help="training seconds per model")
    p.add_argument("--corpus", choices=("wikitext-2", "synthetic"), default=None,
                   help="(default: wikitext-2 when it is on disk, else synthetic)")
    p.add_argument("--names", nargs=2, default=None, metavar=("LSTM", "TRANSFORMER"), help="the runs' names")
    p.set_defaults(func=cmd_demo)
