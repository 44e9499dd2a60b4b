"""The notebook cells of the exercises, so that putting them into a notebook is mechanical.

`cells("03")` lists notebook 03's exercises as `ExerciseCells`: the heading of the section they
close (`after`), the markdown that explains the exercise, the stub cell (runnable as it is: it
defines the function, which raises NotImplementedError only when called) and the check cell (which
reports an unfinished stub as "not done yet", never an error). `with_exercises(nb, "03")` returns the
notebook (as read by json or nbformat) with every exercise's three cells inserted at the end of its
section, before the next heading of the same or a higher level. The cells' ids name the exercise
(exercise-03-attention-text, -stub, -check); one already in the notebook is not inserted again.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

from labkit.exercises.core import EXERCISES, Exercise, names


class ExerciseCells(NamedTuple):
    name: str
    after: str  # the heading (a markdown cell's first line) of the section the cells close
    markdown: str
    stub: str
    check: str


def markdown(exercise: Exercise) -> str:
    n = exercise.name
    return (f"### Exercise {n}: {exercise.title}\n\n{exercise.intro}\n\n"
            f"Complete `{exercise.function}` in the next cell, run it, then run the check below it. Stuck? "
            f'`hint("{n}")` prints a hint and `solution("{n}")` the answer: they show only when you ask.')


def check_cell(exercise: Exercise) -> str:
    n = exercise.name
    return (f"from labkit.exercises import check, hint, solution\n\n"
            f'check("{n}", {exercise.function})\n'
            f'# hint("{n}")      # a hint, when you want one\n'
            f'# solution("{n}")  # the answer, once you have tried')


def cells(notebook: str) -> list[ExerciseCells]:
    """Notebook `notebook`'s exercises ("03", or its file name), each as its three cells' sources."""
    found = [EXERCISES[n] for n in names(notebook)]
    if not found:
        raise KeyError(f"no exercises for notebook {notebook!r}: name it by its number, 01 to 06")
    return [ExerciseCells(e.name, e.after, markdown(e), e.stub(), check_cell(e)) for e in found]


def _level(cell: dict[str, Any]) -> int:
    """The level of the heading a markdown cell starts with (1 for '# ...'), 0 when it has none."""
    if cell.get("cell_type") != "markdown":
        return 0
    first = "".join(cell.get("source", "")).lstrip().split("\n", 1)[0]
    level = len(first) - len(first.lstrip("#"))
    return level if level and first[level:level + 1] == " " else 0


def _cell(kind: str, source: str, cell_id: str) -> dict[str, Any]:
    cell = {"cell_type": kind, "id": cell_id, "metadata": {}, "source": source}
    return {**cell, "execution_count": None, "outputs": []} if kind == "code" else cell


def with_exercises(nb: dict[str, Any], notebook: str) -> dict[str, Any]:
    """A copy of notebook `nb` with the exercise cells of `notebook` inserted (see the module's doc)."""
    nb = copy.deepcopy(nb)
    present = {str(c.get("id", "")) for c in nb["cells"]}
    for exercise in cells(notebook):
        ident = exercise.name.replace(".", "-")
        if f"exercise-{ident}-text" in present:
            continue
        heading = next((i for i, c in enumerate(nb["cells"]) if _level(c)
                        and "".join(c["source"]).lstrip().split("\n", 1)[0].strip() == exercise.after), None)
        if heading is None:
            raise ValueError(f"{exercise.name}: the notebook has no heading {exercise.after!r}")
        level = _level(nb["cells"][heading])
        end = next((i for i in range(heading + 1, len(nb["cells"])) if 0 < _level(nb["cells"][i]) <= level
                    and not str(nb["cells"][i].get("id", "")).startswith("exercise-")), len(nb["cells"]))
        nb["cells"][end:end] = [_cell("markdown", exercise.markdown, f"exercise-{ident}-text"),
                                _cell("code", exercise.stub, f"exercise-{ident}-stub"),
                                _cell("code", exercise.check, f"exercise-{ident}-check")]
    return nb
