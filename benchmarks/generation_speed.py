"""Generation speed of a run, with and without the KV cache.

    python benchmarks/generation_speed.py runs/NAME [--new-tokens 256] [--repeats 3]

Greedy decoding from a short prompt, <eos> not allowed to stop it, so both paths produce the
same number of tokens (and, being greedy, the same tokens). Prints tokens/s for each path (the
median of --repeats) and writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from labkit.errors import LabkitError
from labkit.generate import SamplingConfig, generate
from labkit.runs import load_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt", default="The game began development in")
    args = parser.parse_args(argv)
    try:
        loaded = load_run(args.run)
    except LabkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = SamplingConfig(temperature=0.0, max_tokens=args.new_tokens, stop_at_eos=False)
    results = {}
    paths = [("kv-cache", True), ("recompute", False)]
    if loaded.model.config.family == "rnn":
        paths = [("carried state", True)]
    for name, cache in paths:
        speeds, texts = [], set()
        for _ in range(args.repeats):
            out = generate(loaded.model, loaded.tokenizer, args.prompt, config, use_cache=cache)
            speeds.append(out.tokens_per_second)
            texts.add(out.text)
        results[name] = (statistics.median(speeds), len(out.tokens), texts)
    print(f"run: {args.run}  ({loaded.model.config.family}, torch threads {torch.get_num_threads()})")
    for name, (speed, n, _) in results.items():
        print(f"  {name:>13}: {speed:8.1f} tokens/s  ({n} new tokens, median of {args.repeats})")
    if "recompute" in results:
        same = results["kv-cache"][2] == results["recompute"][2]
        print(f"  speed-up: {results['kv-cache'][0] / results['recompute'][0]:.1f}x; same text: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
