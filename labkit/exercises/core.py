"""The machinery under every exercise: the registry, `check`, `hint`, `solution`, the stub.

An exercise is a function the student writes. Its reference solution is an ordinary function in
labkit.exercises (same name, same signature, the docstring the student reads); the stub handed to
the student is made from it (the signature and docstring, then `raise NotImplementedError`), so
the two never drift apart. Its checker calls a function on small cases whose answers are known
(computed by hand, or by labkit's own code on the same weights) and raises `Mistake` with a
message that teaches: what was expected, what came back, and the likely mistake, found by
comparing the answer with what each known mistake returns (`expect(..., known=...)`).

`check(name, fn)` prints the verdict (✓, the message, or "not done yet" for a stub) and, when
the environment names a grade file (LABKIT_GRADE_FILE, set by `labkit grade`), appends it there
as one JSON line.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import os
import textwrap
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRADE_FILE = "LABKIT_GRADE_FILE"  # where check() records its verdicts (labkit grade sets it)
PASSED, FAILED, NOT_DONE = "passed", "failed", "not done"
PACKAGE = Path(__file__).resolve().parent


class Mistake(Exception):
    """A check failed; the message says what was expected, what came back and the likely cause."""


@dataclass(frozen=True)
class Exercise:
    name: str  # "01.perplexity": the notebook's number, then the topic
    reference: Callable[..., Any]  # the solution, under the name the student's function has
    checker: Callable[[Callable[..., Any]], int]  # raises Mistake; returns the number of cases
    title: str  # what to write, in a line
    intro: str  # the markdown above the stub: the idea, the equation
    hint: str
    after: str  # the heading of the notebook section the exercise's cells close
    imports: str = ""  # the lines the stub cell starts with

    @property
    def notebook(self) -> str:
        return self.name.split(".")[0]

    @property
    def function(self) -> str:
        return self.reference.__name__

    def solution_source(self) -> str:
        return textwrap.dedent(inspect.getsource(self.reference))

    def stub(self) -> str:
        """The reference's signature and docstring, then a body that raises NotImplementedError."""
        source = self.solution_source()
        fn = ast.parse(source).body[0]
        body = fn.body[0]
        docstring = isinstance(body, ast.Expr) and isinstance(body.value, ast.Constant)
        keep = body.end_lineno if docstring else fn.body[0].lineno - 1
        head = "\n".join(source.splitlines()[:keep])
        todo = (f'    # your code here\n    raise NotImplementedError("{self.name} is not done yet: write the body of '
                f'{self.function}; stuck? hint(\'{self.name}\')")\n')
        return f"{self.imports.strip()}\n\n\n{head}\n{todo}" if self.imports.strip() else f"{head}\n{todo}"


EXERCISES: dict[str, Exercise] = {}


def exercise(name: str, reference: Callable[..., Any], *, title: str, intro: str, hint: str, after: str,
             imports: str = "") -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Register the decorated checker as exercise `name`, whose solution is `reference`."""
    def register(checker: Callable[..., int]) -> Callable[..., int]:
        if name in EXERCISES:
            raise ValueError(f"exercise {name} is registered twice")
        EXERCISES[name] = Exercise(name, reference, checker, title, textwrap.dedent(intro).strip(),
                                   textwrap.dedent(hint).strip(), after, textwrap.dedent(imports).strip())
        return checker
    return register


def get(name: str) -> Exercise:
    if name not in EXERCISES:
        close_ones = [n for n in EXERCISES if n.split(".")[-1] in name or name in n]
        known = ", ".join(close_ones or EXERCISES)
        raise KeyError(f"no exercise {name!r}; the exercises are: {known}")
    return EXERCISES[name]


def names(notebook: str | None = None) -> list[str]:
    """Every exercise's name, or those of one notebook ("03", or a notebook's file name)."""
    number = None if notebook is None else Path(str(notebook)).name[:2]
    return sorted((n for n, e in EXERCISES.items() if number is None or e.notebook == number),
                  key=lambda n: EXERCISES[n].notebook)  # in notebook order, each notebook's as registered


# --- comparing an answer with the expected one -------------------------------------------------------
def show(value: Any, width: int = 160) -> str:
    """A short, readable form: floats to 4 significant digits, tensors with their shape."""
    import torch

    if isinstance(value, torch.Tensor):
        values = value.detach().double().round(decimals=4).tolist() if value.is_floating_point() else value.tolist()
        text = f"tensor of shape {tuple(value.shape)}: {values}"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (tuple, list)) and value and all(isinstance(v, float) for v in value):
        text = "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    elif isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
        text = "(" + "; ".join(show(v, width) for v in value) + ")"
    else:
        text = repr(value)
    return text if len(text) <= width else text[: width - 5] + " ...]"


def close(got: Any, want: Any, atol: float = 1e-5) -> bool:
    """Does `got` equal `want`: tensors of one shape within atol (and 1e-4 relative), floats the
    same, sequences item by item, anything else by ==."""
    import torch

    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return False
        if not want.is_floating_point():
            return bool(torch.equal(got.to(want.dtype), want))
        return bool(torch.allclose(got.detach().double(), want.detach().double(), atol=atol, rtol=1e-4, equal_nan=True))
    if isinstance(want, float):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = float(got)
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return False
        if math.isnan(want) or math.isnan(got):
            return math.isnan(want) and math.isnan(got)
        return math.isclose(got, want, rel_tol=1e-4, abs_tol=atol) or (math.isinf(got) and got == want)
    if isinstance(want, (tuple, list)) and isinstance(got, (tuple, list)):
        return len(got) == len(want) and all(close(g, w, atol) for g, w in zip(got, want))
    return bool(got == want)


def expect(got: Any, want: Any, *, what: str, known: Mapping[str, Any] | None = None, atol: float = 1e-5,
           otherwise: str = "") -> None:
    """Raise Mistake unless `got` equals `want`. The message names `what` was computed, both values,
    and the first of `known` (the message for a mistake -> what that mistake returns, or a function
    of no arguments that computes it, called only when `got` is wrong) that `got` equals, else
    `otherwise`."""
    if close(got, want, atol):
        return
    import torch

    shape = ""
    if isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor) and got.shape != want.shape:
        shape = f" (shape {tuple(got.shape)} where {tuple(want.shape)} was expected)"
    why = next((message for message, wrong in (known or {}).items()
                if close(got, wrong() if callable(wrong) else wrong, atol)), otherwise)
    lines = [f"{what}: expected {show(want)}", f"got {show(got)}{shape}"]
    raise Mistake("\n".join(lines + ([f"Likely mistake: {why}"] if why else [])))


# --- the verdict -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    exercise: str
    status: str  # passed | failed | not done
    message: str

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def line(self) -> str:
        mark = {PASSED: "✓", NOT_DONE: "…"}.get(self.status, "✗")
        return f"{mark} {self.exercise}: {self.message}"


def _where(error: BaseException) -> str:
    """The line of the student's code (outside labkit and the libraries) where `error` was raised,
    or "" when none of the traceback is theirs (their function returned, and its answer broke the check)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(str(PACKAGE.parent)) and "site-packages" not in f.filename]
    return f"\n  at: {frames[-1].line}" if frames and frames[-1].line else ""


def evaluate(name: str, fn: Any) -> Result:
    """Run exercise `name`'s checks on `fn`: the verdict, never an exception."""
    exercise = get(name)
    if not callable(fn):
        return Result(name, FAILED, f"check needs your function itself, as in check({name!r}, "
                                    f"{exercise.function}); got {show(fn)}")
    try:
        cases = exercise.checker(fn)
    except NotImplementedError:
        return Result(name, NOT_DONE, f"not done yet: write the body of {exercise.function} above, run its cell, then "
                                      f"this one (stuck? hint({name!r}))")
    except Mistake as e:
        return Result(name, FAILED, str(e))
    except Exception as e:  # a verdict, not a crash: where the student's code raised, or what its answer broke
        where = _where(e)
        if where:
            return Result(name, FAILED, f"your function raised {type(e).__name__}: {e}{where}")
        return Result(name, FAILED, f"your function's answer could not be checked ({type(e).__name__}: {e}): compare "
                                    f"its type and shape with what the docstring of {exercise.function} asks for")
    return Result(name, PASSED, f"passed ({cases} case{'s' if cases != 1 else ''})")


def record(result: Result, source: str = "check") -> None:
    """Append the verdict to the grade file named by LABKIT_GRADE_FILE, when it is set."""
    path = os.environ.get(GRADE_FILE)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"exercise": result.exercise, "status": result.status,
                                "message": result.message, "source": source}) + "\n")


def check(name: str, fn: Any) -> None:
    """Check your function for exercise `name`: prints ✓, a message that says what went wrong, or
    "not done yet" while the stub is unfinished."""
    result = evaluate(name, fn)
    record(result)
    print(result.line())


def hint(name: str) -> None:
    """Print the hint of exercise `name`."""
    print(f"Hint for {name}:\n{get(name).hint}")


def solution(name: str) -> None:
    """Print the solution of exercise `name` (try first: a hint may be enough)."""
    exercise = get(name)
    imports = f"{exercise.imports}\n\n\n" if exercise.imports else ""
    print(f"# The solution of {name}\n{imports}{exercise.solution_source()}")
