"""The `labkit` command line: pretrain language models, evaluate them, sample from them.

Training writes a run directory (runs/<name>/); every other command takes a RUN: the path of a
run directory, or the name of a run under --runs-dir.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from labkit import __version__
from labkit.cli.app import add_app
from labkit.cli.bench import add_bench
from labkit.cli.common import HelpFormatter, Parser, add_command
from labkit.cli.demo import add_demo
from labkit.cli.finetune import add_finetune
from labkit.cli.grade import add_grade
from labkit.cli.interop import add_interop
from labkit.cli.lm import cmd_eval, cmd_generate, cmd_runs
from labkit.cli.pretrain import add_pretrain
from labkit.errors import LabkitError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="labkit", description=__doc__,
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
                    "its config. Every token of the split is scored once: an RNN carries its state\n"
                    "through the whole split; a Transformer reads sliding windows of its training length\n"
                    "that move by --stride tokens, so each scored token has at least (length - stride)\n"
                    "tokens of context before it.", "examples:\n  labkit eval first\n"
                    "  labkit eval runs/gru-1 --split test --which last\n"
                    "  labkit eval tf-1 --stride 1          # the exact figure, one window per token")
    p.add_argument("--split", choices=("valid", "test"), default="valid", help="the split")
    p.add_argument("--stride", type=int, metavar="N", help="Transformers: windows move by N tokens, in "
                   "[1, the run's seq_len] (default: the run's eval_stride, else half its seq_len)")
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
                      "stdin), for prompts too long for a command line")
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
    p.add_argument("--allow-unk", action="store_true", default=None, help="let <unk> (the vocabulary's "
                   "stand-in for words it lacks) be generated; by default it is never chosen, greedy "
                   "decoding included")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole prefix at every "
                   "step instead of using the KV cache (the slow reference path)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                   help="print tokens as they come")
    p.set_defaults(func=cmd_generate)

    add_finetune(sub)
    add_interop(sub)

    p = add_command(sub, "runs", "list the runs in a runs directory", "A table of the runs under "
                    "--runs-dir, from their configs and results cards.",
                    "example:\n  labkit runs --runs-dir experiments", run=False)
    p.set_defaults(func=cmd_runs)
    add_bench(sub)
    add_demo(sub)
    add_app(sub)
    add_grade(sub)
    return parser


# What the system says of a path a user gave (too long, a loop of links, not a folder, no permission):
# one line naming the path, not a traceback.
PATH_ERRORS = {errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM,
               errno.EROFS, errno.ENOENT}


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is returned (argparse's own exits included)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if hasattr(args, "passed_on"):  # `labkit app` passes the options it does not know to Streamlit
            args.passed_on = extra
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
    except OSError as e:
        if e.errno not in PATH_ERRORS:
            raise
        path = str(e.filename or "")
        shown = path if len(path) <= 80 else f"{path[:60]}... ({len(path):,} characters)"
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
        print(f"labkit: error: {shown}: {e.strerror} (check the path given)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `labkit generate ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
