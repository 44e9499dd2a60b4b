"""The `labkit` command line: pretrain language models, evaluate them, sample from them.

Training writes a run directory (runs/<name>/); every other command takes a RUN: the path of a
run directory, or the name of a run under --runs-dir.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from labkit import __version__
from labkit.errors import LabkitError

# Flags that describe the model or the tokenizer: --init-from takes both from its run instead.
MODEL_FLAGS = ("preset", "model", "layers", "d_model", "hidden", "heads", "context", "dropout",
               "tie", "output", "tokenizer", "vocab_size", "max_vocab")
# What --resume may change (pretrain.RESUMABLE_OVERRIDES), as flag -> TrainConfig field.
RESUME_FLAGS = {"steps": "max_steps", "time_budget": "time_budget_s", "eval_every": "eval_every",
                "log_every": "log_every", "device": "device"}
NOT_SETTINGS = {"command", "func", "name", "runs_dir", "resume", "no_progress"}
RNN_PROMPT_WORDS = 2_000  # an RNN reads its prompt one token at a time: cut longer ones


# --- small helpers ------------------------------------------------------------------------------
def duration(text: str) -> float:
    """Seconds from '900', '90s', '15m', '1.5h'."""
    m = re.fullmatch(r"(\d+(?:\.\d*)?)([smh]?)", text.strip().lower())
    if not m or float(m[1]) <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use seconds (900) or a "
                                         "number with s, m or h (90s, 15m, 1h)")
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]


def run_path(value: str, runs_dir: str) -> Path:
    """A RUN argument: a directory, or the name of a run under runs_dir."""
    if Path(value).expanduser().is_dir():
        return Path(value).expanduser()
    if "/" not in value and (Path(runs_dir) / value).is_dir():
        return Path(runs_dir) / value
    raise LabkitError(f"no run {value!r}: it is neither a directory nor a run name under "
                      f"{runs_dir}/ (list them with: labkit runs --runs-dir {runs_dir})")


def given(args: argparse.Namespace, names: Any) -> list[str]:
    """The flags among `names` (argparse dests) that were given on the command line."""
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n, None) is not None]


def number(value: Any, spec: str = ",.2f") -> str:
    return "-" if value is None else format(value, spec)


def note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


# --- pretrain -----------------------------------------------------------------------------------
def model_config(args: argparse.Namespace, preset: dict[str, Any]):
    from labkit.models import config_from_dict

    if preset["family"] == "rnn":
        if given(args, ("heads", "context")):
            raise LabkitError(f"{', '.join(given(args, ('heads', 'context')))}: for Transformers "
                              "only (--model transformer)")
        size = {"d_embed": args.d_model, "d_hidden": args.hidden or args.d_model}
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
    return (TrainConfig.from_dict(train | overrides(args, TrainConfig, renames)),
            DataConfig.from_dict(data))


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
    from labkit.pretrain import pretrain
    from labkit.rundir import RunDir, safe_run_path

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
    fresh = not out.exists()
    try:
        return train(args, out, lambda callbacks: pretrain(
            model, train_cfg, data_cfg, out, callbacks=callbacks, data=data, init_from=base))
    finally:  # stopped before training began (a bad setting, Ctrl-C): leave nothing behind
        if (dist.is_main and fresh and out.exists()
                and not RunDir(out).card_path.exists()):
            shutil.rmtree(out, ignore_errors=True)


def cmd_resume(args: argparse.Namespace) -> int:
    from labkit.pretrain import resume
    from labkit.rundir import RunDir, safe_run_path

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
        print(f"resuming run: {out} (from step {done})", flush=True)
    else:
        print(f"resuming run: {out} from step 0: it was stopped before its first checkpoint",
              flush=True)
    changes = {field: getattr(args, name) for name, field in RESUME_FLAGS.items()}
    return train(args, out, lambda callbacks: resume(out, callbacks=callbacks, overrides=changes))


def train(args: argparse.Namespace, out: Path, start) -> int:
    """Run `start(callbacks)` with a progress display; report how it ended."""
    from labkit.train.callbacks import Callback, ProgressBar
    from labkit.train.trainer import TrainingStopped

    class Display(Callback):
        """A progress bar from the first step on (not while the data loads); evaluations."""
        bar: ProgressBar | None = None

        def on_step(self, trainer: Any, record: dict[str, Any]) -> None:
            if not args.no_progress:
                self.bar = self.bar or ProgressBar(trainer.config.max_steps, record["step"])
                self.bar.on_step(trainer, record)

        def on_eval(self, trainer: Any, record: dict[str, Any]) -> None:
            if self.bar:
                self.bar.on_eval(trainer, record)
            else:
                print(f"step {record['step']}: val loss {record['val_loss']:.4f}, "
                      f"val ppl {record['val_ppl']:.2f}", flush=True)

    display = Display()  # a torchrun worker other than rank 0 writes to /dev/null
    try:
        card = start([display])
    except TrainingStopped as e:
        sig = e.signal
        if sig is None:  # the loss diverged
            print(f"labkit: error: {e}", file=sys.stderr)
            return 1
        where = "" if args.runs_dir == "runs" else f" --runs-dir {args.runs_dir}"
        print(f"labkit: {e}; a checkpoint is saved.\ncontinue with: labkit pretrain "
              f"--name {args.name}{where} --resume", file=sys.stderr)
        return 128 + sig
    finally:
        if display.bar:
            display.bar.bar.close()
    print(f"finished: {card['steps']:,} steps, {card['tokens_seen']:,} tokens in "
          f"{card['wall_time_s']:.1f} s ({number(card.get('tokens_per_s'), ',.0f')} tokens/s "
          f"on {card['device']})")
    print(f"best val ppl {number(card.get('best_val_ppl'))}, test ppl "
          f"{number(card.get('test_ppl'))} (word-level {number(card.get('test_word_ppl'))})")
    out = os.path.relpath(out)
    print(f"card: {out}/card.json\nnext: labkit generate {out} --prompt 'The'")
    return 0


# --- eval, generate, runs -----------------------------------------------------------------------
def load_lm_run(args: argparse.Namespace):
    """The language-model run named by args.run (a LoadedRun)."""
    from labkit.pretrain import load_run

    loaded = load_run(run_path(args.run, args.runs_dir), which=args.which, device=args.device)
    kind = loaded.config.get("kind", "lm")
    if kind != "lm":
        raise LabkitError(f"{args.run} is a {kind} run; this command needs a language model, "
                          "a run made by labkit pretrain")
    return loaded


def cmd_eval(args: argparse.Namespace) -> int:
    from labkit.data.lm import DataConfig, load_lm_data
    from labkit.train.trainer import TrainConfig, Trainer

    loaded = load_lm_run(args)
    config = loaded.config
    data = load_lm_data(DataConfig.from_dict(config["data"]), loaded.tokenizer)
    train_cfg = TrainConfig.from_dict(config["train"] | {"device": args.device, "compile": False})
    result = Trainer(loaded.model, data, train_cfg).evaluate(args.split)
    print(f"{loaded.run.root} ({args.which} weights), {args.split}: {result['tokens']:,} tokens")
    print(f"loss {result['loss']:.4f}  ppl {result['ppl']:.2f}  word ppl {result['word_ppl']:.2f}")
    return 0


def text_pieces(tokenizer: Any, tokens: Any):
    """The generated text piece by piece, reading as `tokenizer.decode` of all of it."""
    sep = "" if tokenizer.kind == "bpe" else " "  # word tokenizers join words with spaces
    pending: list[int] = []
    first = True
    for token in tokens:
        pending.append(token.id)
        text = tokenizer.decode(pending)
        if text.endswith("\ufffd") and len(pending) < 4:  # part of a multi-byte character
            continue
        yield ("" if first else sep) + text
        pending, first = [], False
    if pending:
        yield ("" if first else sep) + tokenizer.decode(pending)


def cmd_generate(args: argparse.Namespace) -> int:
    from labkit.generate import SamplingConfig, stream

    config = SamplingConfig(**overrides(args, SamplingConfig, {}))  # its defaults for the rest
    prompt = args.prompt_file.read() if args.prompt_file else args.prompt
    loaded = load_lm_run(args)
    words = prompt.split()
    if loaded.model.config.family == "rnn" and len(words) > RNN_PROMPT_WORDS:
        note(f"prompt of {len(words):,} words cut to the last {RNN_PROMPT_WORDS:,} (an RNN reads "
             "it one token at a time)")
        prompt = " ".join(words[-RNN_PROMPT_WORDS:])
    tokens = stream(loaded.model, loaded.tokenizer, prompt, config, use_cache=not args.no_cache)
    for notice in tokens.notices:
        note(notice)
    pieces = text_pieces(loaded.tokenizer, tokens)
    for piece in pieces if args.stream else ["".join(pieces)]:
        sys.stdout.write(piece)
        sys.stdout.flush()
    print()
    print(f"{len(tokens.tokens)} tokens, {tokens.tokens_per_second:.1f} tokens/s "
          f"(stopped by {tokens.stop_reason})", file=sys.stderr)
    return 0


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def cmd_runs(args: argparse.Namespace) -> int:
    from labkit.inspect.runs import drop_empty_columns, summary_row
    from labkit.rundir import list_runs

    infos = list_runs(args.runs_dir)
    if not infos:
        print(f"no runs in {args.runs_dir}/ yet; train one with: labkit pretrain --preset tiny")
        return 0
    rows = drop_empty_columns([summary_row(info) for info in infos])
    names = [k for k in rows[0] if k != "problem"]
    table = [names, *([cell(row[k]) for k in names] for row in rows)]
    widths = [max(len(line[c]) for line in table) for c in range(len(names))]
    numeric = [any(isinstance(row[k], (int, float)) for row in rows) for k in names]
    for line in table:
        print("  ".join(v.rjust(w) if num else v.ljust(w)
                        for v, w, num in zip(line, widths, numeric, strict=True)).rstrip())
    for info in infos:
        if info.error:
            print(f"{info.path.name}: {info.error}")
    return 0


# --- the parser ---------------------------------------------------------------------------------
class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks; shows real defaults (not None / False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default in (None, "", argparse.SUPPRESS) or action.default is False
        if action.option_strings and "(default" not in text and not unset:
            text += " (default: %(default)s)"
        return text


P = "(default: from the preset)"
PRETRAIN_EPILOG = """\
presets: tiny (seconds on a CPU), classic (the classic 2x200 LSTM, or a Transformer of the
same size), medium (GPU sizes); --preset tiny --model gru, or a full name like classic-lstm.

examples:
  labkit pretrain                                     # a tiny LSTM on WikiText-2
  labkit pretrain --preset classic --model lstm --time-budget 15m
  labkit pretrain --model transformer --layers 4 --d-model 128 --heads 4 --steps 2000
  labkit pretrain --preset classic --model gru --epochs 1 --name gru-1
  labkit pretrain --name gru-1 --resume --steps 6000  # continue it, longer
  labkit pretrain --init-from gru-1 --corpus my_notes.txt --steps 500 --lr 3e-4"""


def pretrain_options() -> dict[str, list[tuple[str, dict[str, Any], str]]]:
    """(flag, argparse keywords, help) by group; defaults are None: "not given"."""
    from labkit.presets import MODELS, PRESETS

    n, x = dict(type=int, metavar="N"), dict(type=float, metavar="X")
    return {
        "model": [
            ("--preset", dict(metavar="NAME"), "a size (tiny, classic, medium) or a preset "
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
            ("--corpus", dict(metavar="NAME|FILE"), "'wikitext-2'; labkit's generated corpora "
             "(no download): 'synthetic', 'synthetic-agreement', 'synthetic-copy', 'synthetic-recall'; "
             "or a plain-text file, split 90/5/5 by lines (default: wikitext-2)"),
            ("--tokenizer", dict(choices=("whitespace", "basic_english", "bpe")),
             "(default: whitespace)"),
            ("--vocab-size", n, "BPE vocabulary size (default: 8000)"),
            ("--max-vocab", n, f"word tokenizers: keep the N most frequent words, 0 = all {P}"),
            ("--train-tokens", n, f"train on the first N tokens, 0 = all {P}"),
            ("--eval-tokens", n, f"evaluate on the first N valid/test tokens, 0 = all {P}")],
        "training": [
            ("--steps", n, f"optimizer steps {P}"),
            ("--epochs", x, "passes over the training tokens, converted to steps"),
            ("--time-budget", dict(type=duration, metavar="TIME"), "stop after this much "
             "training time, even before --steps: seconds, or 90s, 15m, 1h"),
            ("--batch-size", n, P),
            ("--seq-len", n, f"bptt window (RNN) / block length (Transformer) {P}"),
            ("--lr", x, f"peak learning rate {P}"),
            ("--optimizer", dict(choices=("adamw", "sgd")), P),
            ("--schedule", dict(choices=("cosine", "constant", "plateau")), P),
            ("--grad-clip", x, f"max gradient norm, 0 = off {P}"),
            ("--grad-accum", n, "micro-batches per optimizer step (default: 1)"),
            ("--eval-every", n, f"validate and save a checkpoint every N steps {P}"),
            ("--log-every", n, f"write a metrics record every N steps {P}"),
            ("--precision", dict(choices=("auto", "fp32", "bf16")), "auto: bf16 on CUDA and on CPUs "
             "with bf16 instructions, fp32 elsewhere (default: auto)"),
            ("--compile", dict(action="store_true", default=None), "torch.compile the model "
             "(pays off on GPUs, not on CPUs)"),
            ("--device", dict(metavar="DEV"), "auto, cpu, cuda, cuda:N or mps (default: auto)"),
            ("--seed", n, "(default: 1234)")],
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
    g.add_argument("--no-progress", action="store_true", help="no progress bar, one line per "
                   "evaluation instead")
    p.set_defaults(func=cmd_pretrain)

# --- finetune, predict --------------------------------------------------------------------------
def cmd_finetune(args: argparse.Namespace) -> int:
    from labkit.finetune import FinetuneConfig, finetune
    from labkit.rundir import safe_run_path

    base = run_path(args.run, args.runs_dir)
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    settings = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    settings["data_dir"] = args.data
    config = FinetuneConfig.from_dict(settings)
    scratch = "scratch" if config.from_scratch else config.mode
    size = f"-n{config.train_size}" if config.train_size else ""
    args.name = args.name or f"{base.name}-{config.task}-{scratch}{size}-s{config.seed}"
    out = safe_run_path(args.runs_dir, args.name)
    print(f"run directory: {out}", flush=True)

    def on_eval(record: dict[str, Any]) -> None:
        print(f"step {record['step']}: val accuracy {record['val_accuracy']:.4f}", flush=True)

    card = finetune(base, config, out, on_eval=on_eval)
    print(f"finished: {card['steps']:,} steps on {card['train_size']:,} sentences in "
          f"{card['wall_time_s']:.1f} s; OOV rate {card['oov_rate']:.1%}")
    print(f"{config.task} dev accuracy {card['accuracy']:.4f} (best val {card['val_accuracy']:.4f}); "
          f"confusion {card['confusion_matrix']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from labkit.finetune import Classifier

    clf = Classifier(run_path(args.run, args.runs_dir))
    for sentence in args.sentences:
        pred = clf.predict(sentence)
        print(f"{pred.label}\t{pred.prob:.3f}\t{sentence}")
    return 0


def add_finetune(sub: Any) -> None:
    p = add_command(sub, "finetune", "fine-tune a pretrained run on a classification task",
                    "Put a classification head on RUN's network and train it on SST-2 sentiment. "
                    "With --from-scratch\nthe same network starts from random weights: the "
                    "comparison that shows what pretraining gave.\nModel selection uses a "
                    "validation split held out from SST-2 train; SST-2 dev is the reported test "
                    "set.", "examples:\n  labkit finetune classic-lstm-1 --mode frozen\n"
                    "  labkit finetune classic-lstm-1 --from-scratch --train-size 6700 --seed 1\n"
                    "  labkit predict classic-lstm-1-sst2-full-s0 'a moving , funny film'",
                    which=False)
    p.add_argument("--task", choices=("sst2",), default="sst2", help="the downstream task")
    p.add_argument("--mode", choices=("full", "frozen", "gradual"), help="full: every weight "
                   "trains; frozen: only the head; gradual: unfreeze from the top, one layer "
                   "group per epoch (default: full)")
    p.add_argument("--from-scratch", action="store_true", default=None,
                   help="random weights instead of RUN's (the baseline)")
    p.add_argument("--pooling", choices=("mean", "last"), help="sentence vector: the masked "
                   "mean of the hidden states, or the last token's (default: last for an RNN, "
                   "mean for a Transformer)")
    p.add_argument("--train-size", type=int, metavar="N", help="use N labelled sentences "
                   "(a learning curve; default: all)")
    p.add_argument("--epochs", type=int, metavar="N", help="(default: 3)")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N steps (equal budgets)")
    p.add_argument("--batch-size", type=int, metavar="N", help="(default: 32)")
    p.add_argument("--lr-body", type=float, metavar="LR", help="(default: 5e-4)")
    p.add_argument("--lr-head", type=float, metavar="LR", help="(default: 2e-3)")
    p.add_argument("--eval-every", type=int, metavar="N", help="validate every N steps (default: 200)")
    p.add_argument("--patience", type=int, metavar="N", help="stop after N validations without "
                   "improvement (default: 4)")
    p.add_argument("--seed", type=int, metavar="N", help="(default: 0)")
    p.add_argument("--data", metavar="DIR", help="where the corpora are (default: $LABKIT_DATA, "
                   "the cache, then a download)")
    p.add_argument("--name", help="the run's folder name (default: <RUN>-<task>-<mode>-s<seed>)")
    p.set_defaults(func=cmd_finetune)

    p = add_command(sub, "predict", "classify sentences with a fine-tuned run",
                    "Print the label, its probability and the sentence, one line each.",
                    "example:\n  labkit predict runs/lstm-sst2 'a gorgeous film' 'a dull mess'",
                    which=False)
    p.add_argument("sentences", nargs="+", metavar="SENTENCE", help="the text to classify")
    p.set_defaults(func=cmd_predict)


def add_command(sub: Any, name: str, about: str, description: str, epilog: str,
                run: bool = True, which: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=about, description=description, epilog=epilog,
                       formatter_class=HelpFormatter)
    if run:
        p.add_argument("run", metavar="RUN", help="a run directory, or a run name under --runs-dir")
        if which:
            p.add_argument("--which", choices=("best", "last"), default="best", help="best: the "
                           "weights with the lowest validation loss; last: the latest checkpoint")
        p.add_argument("--device", default="auto", metavar="DEV",
                       help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="where runs are kept")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__,
                                     formatter_class=HelpFormatter, epilog="""\
examples:
  labkit pretrain --preset tiny --model lstm --name first
  labkit runs
  labkit eval first --split test
  labkit generate first --prompt 'The game' --top-p 0.9 --seed 0

Each command has its own --help, e.g. labkit pretrain --help.""")
    parser.add_argument("--version", action="version", version=f"labkit {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_pretrain(sub)

    p = add_command(sub, "eval", "loss and perplexity of a run on valid or test",
                    "Evaluate a run on its own data: the corpus, tokenizer and token limits in "
                    "its config.json.", "examples:\n  labkit eval first\n"
                    "  labkit eval runs/gru-1 --split test --which last")
    p.add_argument("--split", choices=("valid", "test"), default="valid", help="the split")
    p.set_defaults(func=cmd_eval)

    p = add_command(sub, "generate", "sample text from a run, streamed as it is generated",
                    "Continue a prompt with a run's model. The text goes to stdout as it is "
                    "generated;\nnotices ('note: ...') and a closing stats line go to stderr.",
                    "examples:\n  labkit generate first --prompt 'The film' --seed 0\n"
                    "  labkit generate runs/first --temperature 0      # greedy\n"
                    "  labkit generate first --prompt-file notes.txt --top-k 40 --top-p 0.9")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--prompt", default="", help="the text to continue; empty: start from "
                      "<eos>, a new paragraph")
    text.add_argument("--prompt-file", metavar="FILE", help="read the prompt from FILE ('-': "
                      "stdin), for prompts too long for a command line",
                      type=argparse.FileType(encoding="utf-8", errors="replace"))
    # Defaults stay None here: labkit.generate.SamplingConfig owns them (and importing it to
    # read them would load torch for every --help).
    p.add_argument("--temperature", type=float, metavar="T", help="divide the logits by T; "
                   "0 = greedy (default: 1)")
    p.add_argument("--top-k", type=int, metavar="K", help="keep the K likeliest tokens; 0 = off "
                   "(default: 0)")
    p.add_argument("--top-p", type=float, metavar="P", help="keep the likeliest tokens up to "
                   "probability mass P, in (0, 1]; 1 = off (default: 1)")
    p.add_argument("--max-tokens", type=int, metavar="N", help="at most this many new tokens "
                   "(default: 50)")
    p.add_argument("--seed", type=int, metavar="N",
                   help="the same seed gives the same text (default: random)")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole prefix at every "
                   "step instead of using the KV cache (the slow reference path)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                   help="print tokens as they come")
    p.set_defaults(func=cmd_generate)

    add_finetune(sub)

    p = add_command(sub, "runs", "list the runs in a runs directory", "A table of the runs under "
                    "--runs-dir, from their config.json and card.json.",
                    "example:\n  labkit runs --runs-dir experiments", run=False)
    p.set_defaults(func=cmd_runs)
    add_bench(sub)
    return parser


# --- bench ----------------------------------------------------------------------------------
def names_list(allowed: tuple[str, ...], none: bool = False) -> Any:
    """A comma-separated list of names from `allowed` ('none' for an empty one when `none`)."""
    def parse(text: str) -> tuple[str, ...]:
        if none and text.strip() == "none":
            return ()
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"{', '.join(bad) or 'nothing'}: choose from {', '.join(allowed)}")
        return names
    return parse


def add_bench(sub: Any) -> None:
    from labkit.bench.names import FAMILIES, SIZES, VARIANTS

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
    p.add_argument("--target-ppl", type=float, default=None, metavar="PPL",
                   help="also report the training time each variant needs to reach this validation perplexity")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads (default: torch's)")
    p.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--corpus", default=None, metavar="NAME", help="wikitext-2 (default) or synthetic "
                   "(default for --size tiny)")
    p.add_argument("--data", default=None, metavar="DIR", help="the data folder (default: $LABKIT_DATA, the cache)")
    p.add_argument("--seed", type=int, default=1234, metavar="N")
    p.add_argument("--out", default=None, metavar="FILE", help="write the results here as JSON "
                   "(default: runs/bench-<size>.json)")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from labkit.bench import BenchConfig, run, table, write_result
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
    result = run(config)
    print(table(result))
    print(f"results: {write_result(result, out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is returned (argparse's own exits included)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "func"):
            parser.print_help()
            return 0
        return args.func(args) or 0
    except SystemExit as e:  # argparse: --help, --version, a usage error
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    except LabkitError as e:
        rank = os.environ.get("RANK", "0")  # under torchrun: which process says it
        where = "" if rank == "0" else f"[rank {rank}] "
        # One line, whatever the message quotes (a name with a newline, say): escaped.
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(e))
        print(f"labkit: error: {where}{text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `labkit generate ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
