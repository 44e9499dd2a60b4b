"""`labkit finetune` and `labkit predict`: a classifier on a pretrained network."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from labkit.cli.common import SEED, add_command, bounded, duration, given, run_path, run_training
from labkit.cli.interop import TENSORBOARD_HELP, tensorboard_callbacks
from labkit.errors import LabkitError

NOT_SETTINGS = {"command", "func", "name", "runs_dir", "resume", "no_progress", "run", "tensorboard"}


# What --resume may change, as flag -> FinetuneConfig field (train.finetune.RESUMABLE_OVERRIDES).
RESUME_FLAGS = {"epochs": "epochs", "max_steps": "max_steps", "eval_every": "eval_every", "log_every": "log_every",
                "patience": "patience", "device": "device"}


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune (or with --resume continue) a run; under torchrun, as one of several processes."""
    from labkit.train import distributed

    dist = distributed.setup()
    try:
        with dist.quiet_unless_main():  # one copy of the output, from rank 0
            code = resume_run(args) if args.resume else new_run(args)
        dist.barrier()
        return code
    finally:
        distributed.teardown()


def new_run(args: argparse.Namespace) -> int:
    from labkit.runs import safe_run_path
    from labkit.train.finetune import FinetuneConfig, finetune

    if args.run is None:
        raise LabkitError("give the pretrained RUN to fine-tune (or --resume --name NAME to continue a fine-tuning run)")
    base = run_path(args.run, args.runs_dir)
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    settings = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    settings["data_dir"] = args.data
    if settings.get("task_lm"):
        settings["from_scratch"] = True
    config = FinetuneConfig.from_dict(settings)
    scratch = "bow" if config.baseline else "tasklm" if config.task_lm else "scratch" if config.from_scratch else config.mode
    size = f"-n{config.train_size}" if config.train_size else ""
    args.name = args.name or f"{base.name}-{config.task}-{scratch}{size}-s{config.seed}"
    out = safe_run_path(args.runs_dir, args.name)
    print(f"run directory: {out}", flush=True)
    return run_training(args, "finetune", lambda callbacks: report(finetune(
        base, config, out, callbacks=callbacks + tensorboard_callbacks(args))))


def resume_run(args: argparse.Namespace) -> int:
    from labkit.runs import RunDir, safe_run_path
    from labkit.train.finetune import resume_finetune

    if not args.name:
        raise LabkitError("--resume needs --name: the fine-tuning run to continue (see: labkit runs)")
    others = [n for n, v in vars(args).items() if n not in NOT_SETTINGS | set(RESUME_FLAGS)]
    if given(args, others):
        raise LabkitError(f"cannot change {', '.join(given(args, others))} when resuming; only "
                          f"{', '.join('--' + f.replace('_', '-') for f in RESUME_FLAGS)} may change")
    out = safe_run_path(args.runs_dir, args.name)
    run = RunDir(out)
    if not run.exists() or run.load_config().get("kind") != "classifier":
        raise LabkitError(f"no fine-tuning run {args.name!r} in {args.runs_dir}/ to resume (see: labkit runs)")
    checkpoint = run.latest_checkpoint()
    where = f"from step {int(checkpoint.name.removeprefix('step-'))}" if checkpoint else \
        "from step 0: it was stopped before its first checkpoint"
    print(f"resuming run: {out} {where}", flush=True)
    changes = {field: getattr(args, flag) for flag, field in RESUME_FLAGS.items()}
    return run_training(args, "finetune", lambda callbacks: report(resume_finetune(
        out, callbacks=callbacks + tensorboard_callbacks(args), overrides=changes)))


def report(card: dict[str, Any]) -> None:
    if card.get("baseline") == "bow":
        print(f"finished: a bag of words on {card['train_size']:,} sentences in {card['wall_time_s']:.1f} s, "
              f"L2 {card['l2']:g} (validation accuracy {card['val_accuracy']:.1%}); OOV rate {card['oov_rate']:.1%}")
    else:
        print(f"finished: {card['steps']:,} steps on {card['train_size']:,} sentences in "
              f"{card['wall_time_s']:.1f} s; OOV rate {card['oov_rate']:.1%}")
    split = "dev" if card["task"] == "sst2" else "test"
    said = [f"{label} {n:,}" for label, n in zip(card.get("labels") or [], predicted(card))]
    print(f"{card['task']} {split} accuracy {card['accuracy']:.4f} (best val {card['val_accuracy']:.4f}); "
          f"predicted: {', '.join(said)}; confusion {card.get('confusion_matrix')}")
    if card.get("vocab_added"):
        print(f"{card['vocab_added']:,} words of the task's training text added to the vocabulary: <unk> "
              f"{card['oov_rate_before']:.1%} of the task's tokens before, {card['oov_rate']:.1%} after")


def predicted(card: dict[str, Any]) -> list[int]:
    """How many test sentences the run gave each label (the confusion matrix's column sums)."""
    matrix = card.get("confusion_matrix") or []
    return [sum(row[j] for row in matrix) for j in range(len(matrix))]


def cmd_predict(args: argparse.Namespace) -> int:
    from labkit.inspect.classifier import Classifier

    clf = Classifier(run_path(args.run, args.runs_dir), device=args.device)
    for sentence in args.sentences:
        pred = clf.predict(sentence)
        print(f"{pred.label}\t{pred.prob:.3f}\t{sentence}")
    return 0


def add_finetune(sub: Any) -> None:
    p = add_command(sub, "finetune", "fine-tune a pretrained run on a classification task",
                    "Put a classification head on RUN's network and train it on SST-2 sentiment (or --task). "
                    "With --from-scratch\nthe same network starts from random weights: the "
                    "comparison that shows what pretraining gave.\nModel selection uses a "
                    "validation split held out from the task's training sentences; SST-2 dev (IMDB test) is "
                    "the reported test set.", "examples:\n  labkit finetune classic-lstm-1 --mode frozen\n"
                    "  labkit finetune classic-lstm-1 --task imdb --lm-text all+unsup\n"
                    "  labkit finetune classic-lstm-1 --from-scratch --train-size 6700 --seed 1\n"
                    "  labkit predict classic-lstm-1-sst2-full-s0 'a moving , funny film'",
                    which=False, optional_run=True)
    p.add_argument("--task", choices=("sst2", "imdb", "number"), help="the downstream task: SST-2 sentiment, IMDB "
                   "movie-review sentiment (25,000 reviews to train on, 25,000 to test; an 84 MB download), or "
                   "number, a stand-in that needs no download (is a phrase's head noun singular or plural?) "
                   "(default: sst2)")
    p.add_argument("--mode", choices=("full", "frozen", "gradual"), help="full: every weight "
                   "trains; frozen: only the head; gradual: unfreeze from the top, one layer "
                   "group per epoch (default: full)")
    p.add_argument("--from-scratch", action="store_true", default=None,
                   help="random weights instead of RUN's (the baseline)")
    p.add_argument("--task-lm-only", dest="task_lm", action="store_true", default=None,
                   help="random weights trained by the language-model step on the task's text alone, then the "
                   "classifier: what in-domain text gives without WikiText (implies --from-scratch)")
    p.add_argument("--vocab-min-count", type=bounded(int, 0, 10**9), metavar="N",
                   help="words of the task's training text that RUN's vocabulary lacks and that occur N times or "
                   "more get rows of their own, trained by the language-model step; 0 for none (default: 5)")
    p.add_argument("--baseline", choices=("bow",), help="no network: the yardstick, a bag-of-words logistic "
                   "regression on the same labelled sentences in RUN's words, its L2 chosen on the validation "
                   "split; seconds")
    p.add_argument("--pooling", choices=("mean", "last", "max", "concat"), help="sentence vector: the masked "
                   "mean of the hidden states, the last token's, their maximum, or all three side by side "
                   "(default: concat)")
    p.add_argument("--train-size", type=bounded(int, 1, 10**9), metavar="N", help="use N labelled sentences "
                   "(a learning curve; default: all)")
    p.add_argument("--val-size", type=bounded(int, 1, 50_000), metavar="N",
                   help="sentences held out from the training ones for "
                   "model selection (default: 2000)")
    p.add_argument("--epochs", type=bounded(int, 1, 10**6), metavar="N", help="passes over the labelled sentences (default: 10)")
    p.add_argument("--max-steps", type=bounded(int, 1, 10**9), metavar="N", help="stop after N steps (equal budgets)")
    p.add_argument("--batch-size", type=bounded(int, 1, 10**6), metavar="N", help="(default: 32)")
    p.add_argument("--max-len", type=bounded(int, 1, 10**6), metavar="N", help="read the first N tokens of each "
                   "sentence (an IMDB review is about 270) (default: 64)")
    p.add_argument("--lr-body", type=bounded(float, 0, above=True), metavar="LR", help="(default: 5e-4)")
    p.add_argument("--lr-head", type=bounded(float, 0, above=True), metavar="LR", help="(default: 2e-3)")
    p.add_argument("--frozen-lr", type=bounded(float, 0, above=True), metavar="LR",
                   help="--mode frozen: the head's rate, a linear model on "
                   "standardised features (default: 3e-2)")
    p.add_argument("--lr-decay", type=bounded(float, 1), metavar="X", help="discriminative rates: each lower layer group of "
                   "the body trains at the rate of the one above divided by X (ULMFiT: 2.6; default: 1)")
    p.add_argument("--schedule", choices=("cosine", "linear"), help="the decay after the warm-up; linear with a "
                   "short warm-up is ULMFiT's slanted triangular schedule (default: linear)")
    p.add_argument("--warmup-frac", type=bounded(float, 0, 0.99), metavar="F", help="warm-up over this share of the steps "
                   "(default: 0.1)")
    p.add_argument("--lm-steps", type=bounded(int, 0, 10**9), metavar="N",
                   help="first fine-tune the language model on the task's "
                   "training text (no labels) for N steps, 0 for none (ULMFiT; default: 200 for an RNN, 60 for a "
                   "Transformer)")
    p.add_argument("--lm-lr", type=bounded(float, 0, above=True), metavar="LR",
                   help="the learning rate of that step (default: 1e-3)")
    p.add_argument("--lm-text", choices=("labelled", "all", "all+unsup"), help="what that step reads: the labelled "
                   "sentences, or every training sentence of the task with its label unread (semi-supervised; never "
                   "the validation or test sentences), or those and unlabelled text of the task's domain (imdb and "
                   "sst2: IMDB's 50,000 unsup reviews) (default: all)")
    p.add_argument("--time-budget", type=duration, dest="time_budget_s", metavar="TIME", help="stop after this "
                   "much training time: seconds, or 90s, 3m")
    p.add_argument("--eval-every", type=bounded(int, 1, 10**9), metavar="N", help="validate every N steps (default: 200)")
    p.add_argument("--log-every", type=bounded(int, 1, 10**9), metavar="N",
                   help="write a metrics record every N steps (default: 10)")
    p.add_argument("--patience", type=bounded(int, 1, 10**9), metavar="N", help="stop after N validations without "
                   "improvement (default: 4)")
    p.add_argument("--dropout", type=bounded(float, 0, 1), metavar="P",
                   help="dropout before the classification head (default: 0.1)")
    p.add_argument("--seed", type=SEED, metavar="N", help="(default: 0)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="auto: bf16 on GPUs and CPUs that "
                   "compute in it, fp16 (with a loss scale) on older GPUs, fp32 elsewhere (default: auto)")
    p.add_argument("--data", metavar="DIR", help="where the corpora are (default: $LABKIT_DATA, "
                   "the cache, then a download)")
    p.add_argument("--name", help="the run's folder name (default: <RUN>-<task>-<mode>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the fine-tuning run --name from its latest "
                   "checkpoint; only --epochs, --max-steps, --eval-every, --patience and --device may be given "
                   "with it")
    p.add_argument("--tensorboard", metavar="DIR", help=TENSORBOARD_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar, one line per evaluation instead")
    p.set_defaults(func=cmd_finetune)

    p = add_command(sub, "predict", "classify sentences with a fine-tuned run",
                    "Print the label, its probability and the sentence, one line each.",
                    "example:\n  labkit predict runs/lstm-sst2 'a gorgeous film' 'a dull mess'",
                    which=False)
    p.add_argument("sentences", nargs="+", metavar="SENTENCE", help="the text to classify")
    p.set_defaults(func=cmd_predict)
