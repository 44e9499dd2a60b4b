"""`labkit demo`: train the app's demo models into a runs folder (what its button starts)."""

from __future__ import annotations

import argparse
from typing import Any

from labkit.cli.common import HelpFormatter, bounded, duration
from labkit.demo import DEMO_RUNS, DEMO_STEPS, demo_corpus


class PrintEvals:
    """One line per evaluation, for the app's log of the demo."""

    def on_eval(self, trainer: Any, record: dict[str, Any]) -> None:
        if "val_accuracy" in record:
            said = f"val accuracy {record['val_accuracy']:.1%}"
        else:
            said = f"val ppl {record.get('val_word_ppl', record['val_ppl']):.1f}"
        print(f"{trainer.run.name}: step {record['step']}, {said}", flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from labkit.experiments import train_demo_models

    corpus = args.corpus or demo_corpus()
    if corpus == "synthetic":
        # One thread: the tiny models are too small to gain from more, and on a busy 2-core machine
        # (the app's server, other jobs) a second thread that waits for a core made training 100x
        # slower in our measurements. The WikiText-2 demo models use every core.
        torch.set_num_threads(1)
    names = dict(zip(args.names, DEMO_RUNS.values())) if args.names else None
    cards = train_demo_models(args.root, steps=args.steps, budget_s=args.budget, corpus=corpus,
                              names=names, callbacks=[PrintEvals()])
    for name, card in cards.items():
        if "accuracy" in card:
            said = f"test accuracy {card['accuracy']:.1%}"
        else:
            said = f"val ppl {card['best_val_ppl']:.1f}, test ppl {card.get('test_word_ppl', card['test_ppl']):.1f}"
        print(f"{name}: {card['steps']} steps, {said}, {card['wall_time_s']:.0f}s", flush=True)
    return 0


def add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="train the app's demo models (an LSTM, a Transformer, a fine-tuned LSTM)",
                       formatter_class=HelpFormatter, description=(
                           "Train an LSTM and a Transformer language model into ROOT, one after the other, then\n"
                           "fine-tune the LSTM: on WikiText-2 (the demo presets, then SST-2) if its files are on\n"
                           "disk, else on labkit's generated corpus (the tiny presets, then the number task).\n"
                           "The app's Train demo models button runs this."),
                       epilog="example:\n  labkit demo runs")
    p.add_argument("root", metavar="ROOT", help="the runs folder")
    p.add_argument("--steps", type=bounded(int, 1, 10**9), default=DEMO_STEPS, metavar="N", help="steps per model")
    p.add_argument("--budget", type=duration, default=None, metavar="S",
                   help="training seconds per language model (default: the presets' own, 55 s LSTM, 65 s Transformer)")
    p.add_argument("--corpus", choices=("wikitext-2", "synthetic"), default=None,
                   help="(default: wikitext-2 when it is on disk, else synthetic)")
    p.add_argument("--names", nargs=2, default=None, metavar=("LSTM", "TRANSFORMER"), help="the runs' names")
    p.set_defaults(func=cmd_demo)
