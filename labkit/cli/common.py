"""What every command shares: argument types, RUN resolution, output helpers, the help format."""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from labkit.errors import LabkitError


def duration(text: str) -> float:
    """Seconds from '900', '90s', '15m', '1.5h'."""
    m = re.fullmatch(r"(\d+(?:\.\d*)?)([smh]?)", text.strip().lower())
    if not m or float(m[1]) <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use seconds (900) or a "
                                         "number with s, m or h (90s, 15m, 1h)")
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]


def bounded(kind: type, low: float = -math.inf, high: float = math.inf, *,
           above: bool = False) -> Callable[[str], Any]:
    """An argparse type: an int, or a finite float, in [low, high] (above low, with `above`)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r:.40} is not {'a whole' if kind is int else 'a'} "
                                             "number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r:.40} is not a finite number")
        if value < low or (above and value == low) or value > high:
            bounds = [f"{'above' if above else 'at least'} {_plain(low)}" if low > -math.inf else "",
                      f"at most {_plain(high)}" if high < math.inf else ""]
            raise argparse.ArgumentTypeError(f"{text:.40} is out of range: it must be "
                                             f"{' and '.join(b for b in bounds if b)}")
        return value
    parse.__name__ = kind.__name__
    return parse


def _plain(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


SEED = bounded(int, 0, 2**63 - 1)  # what every random number generator labkit seeds accepts


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


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


MAY_BE_EMPTY = {"--prompt"}  # an empty prompt has a meaning: start from <eos>


class Parser(argparse.ArgumentParser):
    """A usage error is one line, `labkit pretrain: error: argument --epochs: ...`, and exit 2. An
    option of plain text given as "" is a mistake (it used to mean "the default", silently)."""

    def error(self, message: str) -> NoReturn:
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        self.exit(2, f"{self.prog}: error: {text} (see: {self.prog} --help)\n")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        flag = action.option_strings[-1] if action.option_strings else ""
        if (flag and action.type is None and arg_strings == [""] and flag not in MAY_BE_EMPTY
                and action.nargs in (None, "?")):
            self.error(f"argument {flag}: empty: give a value, or leave {flag} out for its default")
        return super()._get_values(action, arg_strings)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks; shows real defaults (not None / False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default in (None, "", argparse.SUPPRESS) or action.default is False
        if action.option_strings and "(default" not in text and not unset:
            text += " (default: %(default)s)"
        return text


def add_command(sub: Any, name: str, about: str, description: str, epilog: str,
                run: bool = True, which: bool = True, optional_run: bool = False) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=about, description=description, epilog=epilog,
                       formatter_class=HelpFormatter)
    if run:
        p.add_argument("run", metavar="RUN", nargs="?" if optional_run else None,
                       help="a run directory, or a run name under --runs-dir")
        if which:
            p.add_argument("--which", choices=("best", "last"), default="best", help="best: the "
                           "weights with the lowest validation loss; last: the latest checkpoint")
        p.add_argument("--device", default="auto", metavar="DEV",
                       help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="where runs are kept")
    return p


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


def run_training(args: argparse.Namespace, command: str, start: Any) -> int:
    """Run `start(callbacks)` (it trains and reports) with a progress display; say how training
    ended: the exit status, and how to continue a run stopped by a signal."""
    from labkit.device import use_cpu_threads
    from labkit.train.callbacks import ProgressBar
    from labkit.train.trainer import TrainingStopped

    use_cpu_threads()  # the cores other work leaves free (LABKIT_THREADS to choose)

    class Display:
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
                print(ProgressBar.describe(record), flush=True)

    display = Display()  # a torchrun worker other than rank 0 writes to /dev/null
    try:
        start([display])
    except TrainingStopped as e:
        sig = e.signal
        if sig is None:  # the loss diverged
            print(f"labkit: error: {e}", file=sys.stderr)
            return 1
        where = "" if args.runs_dir == "runs" else f" --runs-dir {args.runs_dir}"
        print(f"labkit: {e}; a checkpoint is saved.\ncontinue with: labkit {command} "
              f"--name {args.name}{where} --resume", file=sys.stderr)
        return 128 + sig
    finally:
        if display.bar:
            display.bar.bar.close()
    return 0
