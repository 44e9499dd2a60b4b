"""`labkit demo`: train the app's demo models into a runs folder (what its button starts)."""

from __future__ import annotations

import argparse
from typing import Any

from labkit.cli.common import HelpFormatter, bounded


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

    from labkit.demo import DEMO_RUNS, check_names, demo_corpus
    from labkit.experiments import train_demo_models

    if args.names:
        check_names(args.names)  # (before anything is loaded or written)
    names = dict(zip(args.names, DEMO_RUNS.values())) if args.names else None
    corpus = args.corpus or demo_corpus()
    if corpus == "synthetic":
        # One thread: the tiny models are too small to gain from more, and on a busy 2-core machine
        # (the app's server, other jobs) a second thread that waits for a core made training 100x
        # slower in our measurements. The WikiText-2 demo models use every core.
        torch.set_num_threads(1)
    cards = train_demo_models(args.root, steps=args.steps, corpus=corpus, names=names, callbacks=[PrintEvals()],
                              status=True)
    for name, card in cards.items():
        if "accuracy" in card:
            said = f"test accuracy {card['accuracy']:.1%}"
        else:
            said = f"val ppl {card['best_val_ppl']:.1f}, test ppl {card.get('test_word_ppl', card['test_ppl']):.1f}"
        print(f"{name}: {card['steps']} steps, {said}, {card.get('wall_clock_s', card['wall_time_s']):.0f} s",
              flush=True)
    return 0


def add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="train the app's demo models (two language models, three classifiers)",
                       formatter_class=HelpFormatter, description=(
                           "Train an LSTM and a Transformer language model into ROOT, fine-tune each on a sentence\n"
                           "task, and train the LSTM's network on that task from scratch, one run after the other:\n"
                           "on WikiText-2 (the demo presets, then SST-2) if its files are on disk, else on labkit's\n"
                           "generated corpus (the tiny presets, then the number task). Every run stops at its steps,\n"
                           "so a slower machine makes the same models, later. The app's Train demo models button\n"
                           "runs this."),
                       epilog="example:\n  labkit demo runs")
    p.add_argument("root", metavar="ROOT", help="the runs folder")
    p.add_argument("--steps", type=bounded(int, 1, 10**9), default=None, metavar="N",
                   help="steps of every run (default: each run's own, docs/results.md)")
    p.add_argument("--corpus", choices=("wikitext-2", "synthetic"), default=None,
                   help="(default: wikitext-2 when it is on disk, else synthetic)")
    p.add_argument("--names", nargs=2, default=None, metavar=("LSTM", "TRANSFORMER"),
                   help="the language-model runs' names (plain names, two different ones)")
    p.set_defaults(func=cmd_demo)
