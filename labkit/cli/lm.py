"""`labkit eval`, `labkit generate` and `labkit runs`: use and list trained runs."""

from __future__ import annotations

import argparse
import sys

from labkit.atomic import MiB, read_bounded
from labkit.cli.common import cell, note, run_path
from labkit.cli.pretrain import overrides
from labkit.errors import LabkitError

RNN_PROMPT_WORDS = 2_000  # an RNN reads its prompt one token at a time: cut longer ones
PROMPT_LIMIT = 16 * MiB  # far more than any model's context; a file past it is a mistake


def load_lm_run(args: argparse.Namespace):
    """The language-model run named by args.run (a LoadedRun)."""
    from labkit.runs import load_run

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
    stride = {} if args.stride is None else {"eval_stride": args.stride}
    train_cfg = TrainConfig.from_dict(config["train"] | {"device": args.device, "compile": False} | stride)
    trainer = Trainer(loaded.model, data, train_cfg)
    result = trainer.evaluate(args.split)
    print(f"{loaded.run.root} ({args.which} weights), {args.split}: {result['tokens']:,} tokens, "
          f"{trainer.objective.eval_method(train_cfg)}")
    print(f"loss {result['loss']:.4f}  ppl {result['ppl']:.2f}  word ppl {result['word_ppl']:.2f}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from labkit.generate import SamplingConfig, stream, text_pieces

    config = SamplingConfig(**overrides(args, SamplingConfig, {}))  # its defaults for the rest
    prompt = read_prompt(args.prompt_file) if args.prompt_file else args.prompt
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


def read_prompt(name: str) -> str:
    """The text of --prompt-file: a regular file of at most PROMPT_LIMIT bytes, or '-' (stdin)."""
    if name == "-":
        data = sys.stdin.buffer.read(PROMPT_LIMIT + 1)
        if len(data) > PROMPT_LIMIT:
            raise LabkitError(f"the prompt on stdin is longer than {PROMPT_LIMIT // MiB} MiB: give a shorter one")
    else:
        try:
            data = read_bounded(name, PROMPT_LIMIT, "prompt file")
        except FileNotFoundError:
            raise LabkitError(f"--prompt-file {name}: no such file") from None
    return data.decode("utf-8", errors="replace")


def cmd_runs(args: argparse.Namespace) -> int:
    from labkit.inspect import quality
    from labkit.inspect.run_tables import drop_empty_columns, summary_row
    from labkit.runs import list_runs

    infos = list_runs(args.runs_dir)
    if not infos:
        print(f"no runs in {args.runs_dir}/ yet; train one with: labkit pretrain --preset tiny")
        return 0
    if len(infos) > 3 and not any(info.run.exists() for info in infos):  # /proc, a home folder, ...
        raise LabkitError(f"{args.runs_dir} holds no labkit runs: none of its {len(infos):,} folders has a "
                          f"{infos[0].run.config_path.name}. Is it the runs folder? (labkit runs --runs-dir DIR)")
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
        elif said := quality.warning(info):
            print("note: " + said.replace("**", ""))
    return 0
