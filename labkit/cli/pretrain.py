"""`labkit pretrain`: train a language model, or continue one (--resume, --init-from)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from labkit.cli.common import SEED, HelpFormatter, bounded, duration, given, note, number, run_path, run_training
from labkit.cli.interop import TENSORBOARD_HELP, tensorboard_callbacks
from labkit.errors import LabkitError

MODEL_FLAGS = ("preset", "model", "layers", "d_model", "hidden", "heads", "context", "dropout",
               "tie", "output", "tokenizer", "vocab_size", "max_vocab")
# What --resume may change (pretrain.RESUMABLE_OVERRIDES), as flag -> TrainConfig field.
RESUME_FLAGS = {"steps": "max_steps", "time_budget": "time_budget_s", "eval_every": "eval_every",
                "log_every": "log_every", "device": "device"}
NOT_SETTINGS = {"command", "func", "name", "runs_dir", "resume", "no_progress", "tensorboard"}


def model_config(args: argparse.Namespace, preset: dict[str, Any]):
    from labkit.models import config_from_dict

    if preset["family"] == "rnn":
        if given(args, ("heads", "context")):
            raise LabkitError(f"{', '.join(given(args, ('heads', 'context')))}: for Transformers "
                              "only (--model transformer)")
        size = {"d_embed": args.d_model, "d_hidden": args.hidden if args.hidden is not None else args.d_model}
    else:
        size = {"d_model": args.d_model, "d_ff": args.hidden, "n_heads": args.heads,
                "context_length": args.context}
    size |= {"n_layers": args.layers, "dropout": args.dropout, "tie_weights": args.tie, "output": args.output}
    if args.output == "adaptive" and args.tie is None:
        size["tie_weights"] = False  # the adaptive softmax has matrices of its own
    return config_from_dict(preset | {k: v for k, v in size.items() if v is not None})


def overrides(args: argparse.Namespace, config_cls: type, renames: dict[str, str]) -> dict:
    """The fields of `config_cls` given as flags (named like the fields, or field -> renames)."""
    values = {f.name: getattr(args, renames.get(f.name, f.name), None)
              for f in dataclasses.fields(config_cls)}
    return {k: v for k, v in values.items() if v is not None}


def configs(args: argparse.Namespace, train: dict[str, Any], data: dict[str, Any]):
    """TrainConfig and DataConfig: `train` and `data` (a preset's or a run's) plus the flags."""
    from labkit.data.lm import DataConfig
    from labkit.train.trainer import TrainConfig

    if args.data and Path(args.data).is_file() and not args.corpus:
        args.corpus, args.data = args.data, None  # --data FILE: a text file is the corpus
    if args.data and not Path(args.data).is_dir():
        raise LabkitError(f"--data {args.data}: no such directory or file")
    for name in ("data", "corpus"):  # paths made absolute, so eval finds them from anywhere
        if getattr(args, name) and Path(getattr(args, name)).expanduser().exists():
            setattr(args, name, str(Path(getattr(args, name)).expanduser().resolve()))
    data = data | overrides(args, DataConfig, {"data_dir": "data"})
    data |= {k: None for k in ("max_vocab", "train_tokens", "eval_tokens") if data.get(k) == 0}
    renames = {"max_steps": "steps", "time_budget_s": "time_budget"}
    given_flags = overrides(args, TrainConfig, renames)
    if "eval_every" in given_flags and "eval_every_s" not in given_flags:
        # --eval-every N alone: validations every N steps only, not also every minute of a preset's
        # clock (a fixed-step run on a slow CPU would otherwise spend most of its time validating)
        given_flags["eval_every_s"] = None
    return TrainConfig.from_dict(train | given_flags), DataConfig.from_dict(data)


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Train (or with --resume continue) a run; under torchrun, as one of several processes."""
    from labkit.train import distributed

    dist = distributed.setup()
    try:
        with dist.quiet_unless_main():  # one copy of the output, from rank 0
            code = cmd_resume(args) if args.resume else new_run(args, dist)
        dist.barrier()  # every rank done with every collective before the group goes
        return code
    finally:
        distributed.teardown()


def new_run(args: argparse.Namespace, dist: Any) -> int:
    from labkit.runs import RunDir, safe_run_path
    from labkit.train.pretrain import pretrain

    # Every process must name the run alike: rank 0's clock decides.
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(dist.broadcast([time.time()])[0]))
    base, model = None, None
    if args.init_from:
        base = run_path(args.init_from, args.runs_dir)
        if given(args, MODEL_FLAGS):
            raise LabkitError(f"--init-from takes the model and tokenizer from {base}; drop "
                              f"{', '.join(given(args, MODEL_FLAGS))}")
        base_config = RunDir(base).load_config()
        train_cfg, data_cfg = configs(args, base_config["train"], base_config["data"])
        default_name = f"{base.name}-cont-{stamp}"
    else:
        from labkit.presets import resolve_preset

        preset = resolve_preset(args.preset or "tiny", args.model)
        model = model_config(args, preset["model"])
        train_cfg, data_cfg = configs(args, preset["train"], preset["data"])
        size, kind = (args.preset or "tiny").split("-")[0], getattr(model, "cell", "transformer")
        default_name = f"{size}-{kind}-{stamp}"
    args.name = args.name or default_name
    out = safe_run_path(args.runs_dir, args.name)
    data = None
    if args.epochs is not None:  # steps per epoch need the training stream's length
        from labkit.data.lm import load_lm_data
        from labkit.data.tokenizers import load_tokenizer

        data = load_lm_data(data_cfg, load_tokenizer(RunDir(base).tokenizer_path) if base else None)
        c = train_cfg
        per_epoch = max(1, data.train.numel() // (c.batch_size * c.seq_len * c.grad_accum))
        train_cfg = c.from_dict(c.to_dict() | {"max_steps": max(1, round(args.epochs * per_epoch))})
        note(f"one epoch is {per_epoch:,} steps: training {train_cfg.max_steps:,} steps")
    print(f"run directory: {out}", flush=True)
    # Stopped before training began (a bad setting, Ctrl-C)? pretrain's run lock removes the run it made.
    return train(args, out, lambda callbacks: pretrain(
        model, train_cfg, data_cfg, out, callbacks=callbacks, data=data, init_from=base))


def cmd_resume(args: argparse.Namespace) -> int:
    from labkit.runs import RunDir, safe_run_path
    from labkit.train.pretrain import resume

    if not args.name:
        raise LabkitError("--resume needs --name: the run to continue (see: labkit runs)")
    others = [n for n, v in vars(args).items() if n not in NOT_SETTINGS | set(RESUME_FLAGS)]
    if given(args, others):
        raise LabkitError(f"cannot change {', '.join(given(args, others))} when resuming; only "
                          "--steps, --time-budget, --eval-every, --log-every, --device may change")
    out = safe_run_path(args.runs_dir, args.name)
    run = RunDir(out)
    if not run.exists():
        raise LabkitError(f"no run {args.name!r} in {args.runs_dir}/ to resume (see: labkit runs)")
    card = run.read_card() if run.card_path.exists() else {}
    checkpoint = run.latest_checkpoint()
    done = int(checkpoint.name.removeprefix("step-")) if checkpoint else 0
    train_config = run.load_config().get("train")
    if not isinstance(train_config, dict) or not isinstance(train_config.get("max_steps"), int):
        raise LabkitError(f"{run.config_path} is damaged: it has no train.max_steps")
    max_steps = args.steps or train_config["max_steps"]
    if max_steps <= done and (args.steps or card.get("status") == "finished"):
        raise LabkitError(f"run {args.name} is already at step {done}; pass a larger --steps "
                          "to train it longer")
    if checkpoint:
        print(f"resuming run: {Path(args.runs_dir) / args.name} (from step {done})", flush=True)
    else:
        print(f"resuming run: {Path(args.runs_dir) / args.name} from step 0: it was stopped before its first checkpoint",
              flush=True)
    changes = {field: getattr(args, name) for name, field in RESUME_FLAGS.items()}
    return train(args, out, lambda callbacks: resume(out, callbacks=callbacks, overrides=changes))


def report(card: dict[str, Any], out: Path) -> None:
    """What a finished pretraining run reached, and what to do next."""
    from labkit.runs import RunDir

    print(f"finished: {card['steps']:,} steps, {card['tokens_seen']:,} tokens in "
          f"{card['wall_time_s']:.1f} s ({number(card.get('tokens_per_s'), ',.0f')} tokens/s "
          f"on {card['device']})")
    print(f"best val ppl {number(card.get('best_val_ppl'))}, test ppl "
          f"{number(card.get('test_ppl'))} (word-level {number(card.get('test_word_ppl'))})")
    print(f"card: {os.path.relpath(RunDir(out).card_path)}\nnext: labkit generate {os.path.relpath(out)} --prompt 'The'")


def train(args: argparse.Namespace, out: Path, start) -> int:
    """Train a new or resumed run with the progress display, TensorBoard (when asked) and the
    run's timeline (labkit.recorder) as callbacks."""
    from labkit.recorder import TimelineRecorder

    return run_training(args, "pretrain", lambda callbacks: report(
        start(callbacks + tensorboard_callbacks(args) + [TimelineRecorder()]), out))


P = "(default: from the preset)"
PRETRAIN_EPILOG = """\
presets: tiny (seconds on a CPU), demo (a minute on a 2-core CPU: the app's demo models),
laptop (10 minutes on a 2-core CPU, the recipes that learn most in that time), classic (the
classic 2x200 LSTM, or a Transformer of the same size), medium (GPU sizes); --preset laptop
--model gru, or a full name like classic-lstm.

examples:
  labkit pretrain --preset laptop                     # an LSTM that learns WikiText-2 in 10 minutes
  labkit pretrain --preset laptop --model transformer
  labkit pretrain                                     # a tiny LSTM on WikiText-2
  labkit pretrain --preset classic --model lstm --time-budget 15m
  labkit pretrain --model transformer --layers 4 --d-model 128 --heads 4 --steps 2000
  labkit pretrain --preset classic --model gru --epochs 1 --name gru-1
  labkit pretrain --name gru-1 --resume --steps 6000  # continue it, longer
  labkit pretrain --init-from gru-1 --corpus my_notes.txt --steps 500 --lr 3e-4"""


def pretrain_options() -> dict[str, list[tuple[str, dict[str, Any], str]]]:
    """(flag, argparse keywords, help) by group; defaults are None: "not given"."""
    from labkit.presets import MODELS, PRESETS

    # sizes and counts are whole numbers from 1 (0 is no size: it was once read as "the preset's");
    # the data limits take 0 for "all"; a BPE vocabulary at most a million pieces
    n, x = dict(type=bounded(int, 1, 10**9), metavar="N"), dict(type=bounded(float), metavar="X")
    n0 = dict(type=bounded(int, 0, 10**12), metavar="N")
    return {
        "model": [
            ("--preset", dict(metavar="NAME"), "a size (tiny, demo, laptop, classic, medium) or a preset "
             f"({', '.join(PRESETS)}) (default: tiny)"),
            ("--model", dict(choices=MODELS), "the architecture (default: lstm, or the preset's)"),
            ("--layers", n, f"number of layers {P}"),
            ("--d-model", n, f"Transformer width; RNN embedding and hidden size {P}"),
            ("--hidden", n, f"RNN hidden size; Transformer feed-forward width {P}"),
            ("--heads", n, f"attention heads (Transformer) {P}"),
            ("--context", n, f"context length (Transformer) {P}"),
            ("--dropout", x, f"dropout probability {P}"),
            ("--tie", dict(action=argparse.BooleanOptionalAction), f"tie the embedding and the "
             f"output layer {P}"),
            ("--output", dict(choices=("softmax", "adaptive")), "the output layer: the full softmax, or "
             "an adaptive softmax (a different, faster model; unties the embedding) (default: softmax)")],
        "data": [
            ("--data", dict(metavar="DIR|FILE"), "the data folder (default: $LABKIT_DATA, then "
             "the user cache, then a download); a text file here means --corpus FILE"),
            ("--corpus", dict(metavar="NAME|FILE"), "'wikitext-2'; 'wikitext-103' (103M tokens, a 190 MB "
             "download: for a GPU); 'imdb' (its 50,000 unlabelled reviews, an 84 MB download); labkit's generated "
             "corpora (no download): 'synthetic', 'synthetic-agreement', 'synthetic-copy', 'synthetic-recall'; "
             "or a plain-text file, split 90/5/5 by lines (default: wikitext-2)"),
            ("--tokenizer", dict(choices=("whitespace", "basic_english", "bpe")),
             "(default: whitespace)"),
            ("--vocab-size", dict(type=bounded(int, 2, 1_000_000), metavar="N"), "BPE vocabulary size (default: 8000)"),
            ("--max-vocab", n0, f"word tokenizers: keep the N most frequent words, 0 = all {P}"),
            ("--train-tokens", n0, f"train on the first N tokens, 0 = all {P}"),
            ("--eval-tokens", n0, f"evaluate on the first N valid/test tokens, 0 = all {P}")],
        "training": [
            ("--steps", n, f"optimizer steps {P}"),
            ("--epochs", dict(type=bounded(float, 0, 1e6, above=True), metavar="X"),
             "passes over the training tokens, converted to steps"),
            ("--time-budget", dict(type=duration, metavar="TIME"), "stop after this much "
             "training time, even before --steps: seconds, or 90s, 15m, 1h"),
            ("--batch-size", n, P),
            ("--seq-len", n, f"bptt window (RNN) / block length (Transformer) {P}"),
            ("--lr", x, f"peak learning rate {P}"),
            ("--optimizer", dict(choices=("adamw", "sgd")), P),
            ("--schedule", dict(choices=("cosine", "linear", "constant", "plateau")), P),
            ("--grad-clip", x, f"max gradient norm, 0 = off {P}"),
            ("--grad-accum", n, "micro-batches per optimizer step (default: 1)"),
            ("--eval-every", n, "validate and save a checkpoint every N steps, and only then: a preset's "
             f"validations by training time are off {P}"),
            ("--eval-every-s", dict(type=duration, metavar="TIME"), "also validate each time this much "
             "training time has passed (the laptop presets: 60 s)"),
            ("--log-every", n, f"write a metrics record every N steps {P}"),
            ("--precision", dict(choices=("auto", "fp32", "bf16", "fp16")), "auto: bf16 on GPUs and CPUs "
             "that compute in it, fp16 (with a loss scale) on older GPUs, fp32 elsewhere (default: auto)"),
            ("--compile", dict(action="store_true", default=None), "torch.compile the model "
             "(pays off on GPUs, not on CPUs)"),
            ("--device", dict(metavar="DEV"), "auto, cpu, cuda, cuda:N or mps (default: auto)"),
            ("--seed", dict(type=SEED, metavar="N"), "(default: 1234)")],
    }


def add_pretrain(sub: Any) -> None:
    p = sub.add_parser("pretrain", help="train a language model (or continue training one)",
                       description="Pretrain an RNN or Transformer language model. Its run "
                       "directory gets the config,\ntokenizer, weights, checkpoints, metrics "
                       "and a results card.", epilog=PRETRAIN_EPILOG, formatter_class=HelpFormatter)
    for title, options in pretrain_options().items():
        group = p.add_argument_group(title)
        how_long = group.add_mutually_exclusive_group() if title == "training" else group
        for name, kw, text in options:
            target = how_long if name in ("--steps", "--epochs") else group
            target.add_argument(name, help=text, **kw)
    g = p.add_argument_group("output")
    g.add_argument("--runs-dir", default="runs", metavar="DIR", help="where runs are kept")
    g.add_argument("--name", help="the run's folder name (default: <preset>-<model>-<time>)")
    g.add_argument("--resume", action="store_true", help="continue the run --name from its "
                   "latest checkpoint; only --steps, --time-budget, --eval-every, --log-every "
                   "and --device may be given with it")
    g.add_argument("--init-from", metavar="RUN", help="start from RUN's weights and tokenizer: "
                   "continued pretraining on --corpus (domain adaptation)")
    g.add_argument("--tensorboard", metavar="DIR", help=TENSORBOARD_HELP)
    g.add_argument("--no-progress", action="store_true", help="no progress bar, one line per "
                   "evaluation instead")
    p.set_defaults(func=cmd_pretrain)
