"""`labkit bench`: training speed, labkit against a plain reference."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from labkit.cli.common import SEED, HelpFormatter, bounded, duration, names_list


def add_bench(sub: Any) -> None:
    from labkit.bench import FAMILIES, SIZES, VARIANTS

    p = sub.add_parser("bench", help="training speed: labkit against a plain reference, side by side",
                       formatter_class=HelpFormatter, description=(
                           "Train the same models the plain way (eager fp32, full logits) and labkit's ways, in "
                           "turn in one process:\ntokens/s, peak memory, FLOP/s against this machine's matrix-"
                           "multiply peak, validation\nperplexity after the same training time, evaluation and "
                           "generation speed. Prints a table,\nwrites JSON. See docs/benchmarks.md."),
                       epilog="examples:\n  labkit bench --budget 3m --out bench.json\n"
                              "  labkit bench --size tiny --budget 5 --windows 2   # a quick look, no data needed\n"
                              "  labkit bench --size medium --device cuda --variants reference,default,compile")
    p.add_argument("--size", choices=SIZES, default="classic", help="the presets to compare (default: classic)")
    p.add_argument("--families", type=names_list(FAMILIES), default=FAMILIES, metavar="LIST",
                   help=f"comma-separated, from {', '.join(FAMILIES)} (default: both)")
    p.add_argument("--variants", type=names_list(VARIANTS), default=None, metavar="LIST",
                   help=f"comma-separated, from {', '.join(VARIANTS)} (default: all but compile)")
    p.add_argument("--budget-variants", type=names_list(VARIANTS, none=True), default=None, metavar="LIST",
                   help="the variants also trained for --budget, or none (default: reference,default,fastest)")
    p.add_argument("--budget", type=duration, default=120.0, metavar="TIME",
                   help="training time per variant for the perplexity comparison (default: 2m)")
    p.add_argument("--windows", type=int, default=7, metavar="N", help="timed windows per variant (default: 7)")
    p.add_argument("--window", type=duration, default=2.0, metavar="TIME", help="length of a window (default: 2s)")
    p.add_argument("--evals", type=int, default=10, metavar="N", help="validation points along the budget")
    p.add_argument("--eval-tokens", type=int, default=20_000, metavar="N", help="validation tokens (default: 20000)")
    p.add_argument("--train-tokens", type=int, default=0, metavar="N", help="training tokens, 0 = all")
    p.add_argument("--gen-tokens", type=int, default=512, metavar="N", help="new tokens to generate, 0 = skip")
    p.add_argument("--target-ppl", type=bounded(float, 1, above=True), default=None, metavar="PPL",
                   help="also report the training time each variant needs to reach this validation perplexity")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads (default: torch's)")
    p.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--corpus", default=None, metavar="NAME", help="wikitext-2 (default) or synthetic "
                   "(default for --size tiny)")
    p.add_argument("--data", default=None, metavar="DIR", help="the data folder (default: $LABKIT_DATA, the cache)")
    p.add_argument("--seed", type=SEED, default=1234, metavar="N")
    p.add_argument("--out", default=None, metavar="FILE", help="write the results here as JSON "
                   "(default: runs/bench-<size>.json)")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from labkit.atomic import check_writable
    from labkit.bench.run import run, table, write_result
    from labkit.bench.variants import BenchConfig
    from labkit.device import pick_device

    pick_device(args.device)  # a bad --device fails here, before any data is read
    extra = {k: v for k, v in (("variants", args.variants), ("budget_variants", args.budget_variants))
             if v is not None}
    config = BenchConfig(size=args.size, families=args.families, budget_s=args.budget, windows=args.windows,
                         window_s=args.window, evals=args.evals, eval_tokens=args.eval_tokens,
                         train_tokens=args.train_tokens, gen_tokens=args.gen_tokens, threads=args.threads,
                         device=args.device, corpus=args.corpus, data_dir=args.data, target_ppl=args.target_ppl,
                         seed=args.seed, progress=not args.quiet, **extra)
    config.check()
    out = Path(args.out or Path("runs") / f"bench-{args.size}.json")
    check_writable(out, "results")  # before minutes of measuring, not after
    result = run(config)
    print(table(result))
    print(f"results: {write_result(result, out)}")
    return 0
