"""LSTM against Transformer at the same parameter count, on labkit's synthetic probes.

    OMP_NUM_THREADS=1 python benchmarks/probes.py --out probes.json [--quick] [--runs DIR]

For each task, a Transformer and an LSTM sized to the same parameter count
(`labkit.inspect.matched_rnn`) train on the same number of tokens of the same corpus through
labkit's own pretrain and Trainer (`labkit.experiments.compare_budget`), with the same settings:

- agreement (corpus "synthetic-agreement"): subject-verb agreement across gaps of 0 to 12 words;
  scored on held-out sentences in which every noun in the gap has the other number (the hard
  case), by distance and by number of attractors (`labkit.inspect.agreement_accuracy`);
- copy (corpus "synthetic-copy"): "s4 s9 s1 | s4 s9 s1", lengths 1 to 20; scored by greedy
  accuracy on the copied half, by length (`labkit.inspect.copy_accuracy`), and, for the
  Transformer, by its induction scores on repeated random symbols (`labkit.inspect.induction_score`),
  plain and with the task's separator between the repeats.

Everything runs in fp32 on the CPU, so the numbers do not depend on bf16 support. `--quick` trains
a few steps only (seconds): it checks the script, its numbers mean nothing. The JSON holds the
setup, each run's card summary (parameters, tokens, FLOPs, wall time, losses) and the scores.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from labkit.data import DataConfig, load_lm_data
from labkit.data import synthetic as syn
from labkit.experiments import compare_budget, matched_rnn, parameter_count
from labkit.inspect import agreement_accuracy, copy_accuracy, induction_score, overall
from labkit.models import config_from_dict
from labkit.presets import PRESETS
from labkit.runs import load_run
from labkit.train.trainer import TrainConfig

# labkit's tiny presets: a 2-layer, 4-head, 64-wide Transformer with a context of 64, and a 1-layer
# tied LSTM whose width is then matched to the Transformer's parameter count.
TRANSFORMER = config_from_dict(PRESETS["tiny-transformer"]["model"])
LSTM = config_from_dict(PRESETS["tiny-lstm"]["model"])
# The same settings for both families, in fp32 (max_steps and eval_every are set per task).
TRAIN = TrainConfig(lr=1e-3, batch_size=32, seq_len=64, warmup_steps=50, log_every=50, precision="fp32", device="cpu")
SIZES = {  # training tokens per task, scored items per distance / length
    "full": dict(agreement_tokens=4_000_000, copy_tokens=16_000_000, items=200, evals=8),
    "quick": dict(agreement_tokens=32 * 64 * 6, copy_tokens=32 * 64 * 6, items=4, evals=2),
}
DISTANCES = (0, 1, 2, 3, 4, 6, 8, 10, 12)
LENGTHS = (1, 2, 4, 8, 12, 16, 20)


def race(task: str, corpus: str, tokens: int, evals: int, runs: Path, quick: bool) -> tuple[dict, dict]:
    """Train both families on `corpus` for `tokens` tokens; returns the results and the loaded runs."""
    data_config = DataConfig(corpus=corpus, eval_tokens=2_000 if quick else None)
    data = load_lm_data(data_config)
    vocab = data.tokenizer.vocab_size
    transformer = TRANSFORMER.replace(vocab_size=vocab)
    lstm = matched_rnn(LSTM.replace(vocab_size=vocab), parameter_count(transformer), vocab)
    steps = -(-tokens // (TRAIN.batch_size * TRAIN.seq_len))
    train = TRAIN.replace(eval_every=max(1, steps // evals))
    budget = compare_budget({"transformer": (transformer, train), "lstm": (lstm, train)}, data_config,
                            runs / task, tokens, data=data)
    results = {name: {"budget": run.row(), "val_curve": run.val,
                      "model": (transformer if name == "transformer" else lstm).to_dict()}
               for name, run in budget.items()}
    return results, {name: load_run(run.path) for name, run in budget.items()}


def induction(run) -> dict:
    """Induction scores on 20 repeated random symbols after <eos>: plain (the standard score) and
    with the copy task's separator between the repeats (the format the model was trained on)."""
    symbols = [i for i, t in enumerate(run.tokenizer.vocab.itos) if t.startswith("s")]
    out = {}
    for name, middle in (("plain", []), ("with_separator", [run.tokenizer.vocab[syn.SEPARATOR]])):
        scores = induction_score(run.model, symbols, length=20, batch=16, prefix=[run.tokenizer.eos_id], middle=middle)
        out[name] = {"scores": scores.round(4).tolist(), "max": float(scores.max()),
                     "head": list(divmod(int(scores.argmax()), scores.shape[1]))}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where to write the JSON results")
    parser.add_argument("--quick", action="store_true", help="a few steps only: checks the script in seconds")
    parser.add_argument("--runs", help="where the four runs go (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(args.runs or scratch)
        out = {"command": "OMP_NUM_THREADS=1 python benchmarks/probes.py " + shlex.join(sys.argv[1:]),
               "setup": {"torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
                         "train": {k: v for k, v in TRAIN.to_dict().items() if k not in ("max_steps", "eval_every")},
                         "items_per_bucket": size["items"]}}

        agreement, loaded = race("agreement", "synthetic-agreement", size["agreement_tokens"], size["evals"], runs,
                                 args.quick)
        items = syn.agreement_items(size["items"], DISTANCES, seed=100, attract=1.0)
        for name, run in loaded.items():
            agreement[name]["scores"] = agreement_accuracy(run.model, run.tokenizer, items)
            agreement[name]["by_attractors"] = agreement_accuracy(run.model, run.tokenizer, items, by="attractors")
            agreement[name]["accuracy"] = overall(agreement[name]["scores"])
        out["agreement"] = {"corpus": "synthetic-agreement", "tokens": size["agreement_tokens"], "runs": agreement}

        copy, loaded = race("copy", "synthetic-copy", size["copy_tokens"], size["evals"], runs, args.quick)
        items = syn.sequence_items(syn.copy_item, size["items"], LENGTHS, seed=100)
        for name, run in loaded.items():
            copy[name]["scores"] = copy_accuracy(run.model, run.tokenizer, items)
            copy[name]["accuracy"] = overall(copy[name]["scores"])
        copy["transformer"]["induction"] = induction(loaded["transformer"])
        out["copy"] = {"corpus": "synthetic-copy", "tokens": size["copy_tokens"], "runs": copy}
    out["wall_time_s"] = round(time.perf_counter() - start, 1)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    for task in ("agreement", "copy"):
        for name, r in out[task]["runs"].items():
            b = r["budget"]
            print(f"{task:9s} {name:11s} params {b['parameters']:,} tokens {b['tokens']:,} "
                  f"time {b['wall_time_s']:.0f} s val loss {b['best_val_loss']:.3f} accuracy {r['accuracy']:.3f}")
    scores = out["copy"]["runs"]["transformer"]["induction"]
    print(f"induction score: max {scores['plain']['max']:.3f}, {scores['with_separator']['max']:.3f} with the "
          f"separator; total {out['wall_time_s']:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
