"""`labkit grade` end to end: small notebooks built here from labkit.exercises' cells run in a real
kernel (nbclient): one with the stubs, one with the solutions, one with a typical mistake and a
teacher's --tests folder, one with a cell that outlasts --timeout; and bad input."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from labkit.cli import main
from labkit.exercises import EXERCISES, cells

pytestmark = pytest.mark.slow

pytest.importorskip("nbclient", reason="labkit grade needs nbclient (pip install -e '.[dev]')")
pytest.importorskip("ipykernel", reason="labkit grade needs ipykernel (pip install -e '.[dev]')")

MISTAKE = '''import math


def perplexity(token_probs):
    return math.exp(-sum(math.log(p) for p in token_probs))  # summed, not averaged
'''


def notebook(path, number: str, *, solved: bool, replace: dict[str, str] | None = None, extra=()):
    """A notebook of notebook `number`'s exercise cells (stubs, or the solutions pasted), with
    `replace`'s code for some exercises and `extra` code cells at the end; written to `path`."""
    nb = nbformat.v4.new_notebook()
    for c in cells(number):
        e = EXERCISES[c.name]
        code = (replace or {}).get(c.name) or (f"{e.imports}\n\n\n{e.solution_source()}" if solved else c.stub)
        nb.cells += [nbformat.v4.new_markdown_cell(c.markdown), nbformat.v4.new_code_cell(code),
                     nbformat.v4.new_code_cell(c.check)]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in extra]
    nbformat.write(nb, path)
    return path


def grade(args, capsys):
    code = main(["grade", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def rows(report):
    return {r["exercise"]: r for r in report["exercises"]}


def test_stubs_are_not_done_and_the_notebook_runs_to_its_last_cell(tmp_path, capsys):
    path = notebook(tmp_path / "01_stubs.ipynb", "01", solved=False,
                    extra=["1 / 0", "open('reached_the_end', 'w').write('yes')"])
    code, out, err = grade([path, "--json", tmp_path / "grades.json"], capsys)
    assert code == 1, out + err
    report = json.loads((tmp_path / "grades.json").read_text())
    assert report["passed"] is False and len(report["notebooks"]) == 1
    nb = report["notebooks"][0]
    assert nb["notebook"] == str(path) and nb["kernel"] == "ran to the end"
    assert {n: r["status"] for n, r in rows(nb).items()} == dict.fromkeys(["01.perplexity", "01.vocab", "01.bptt",
                                                                              "01.bpe_merge"], "not done")
    assert nb["counts"] == {"passed": 0, "failed": 0, "not done": 4, "not run": 0}
    assert [(e["cell"], e["ename"], e["source"]) for e in nb["errors"]] == [(12, "ZeroDivisionError", "1 / 0")]
    assert (tmp_path / "reached_the_end").read_text() == "yes"  # the cell after the error ran, in the notebook's folder
    for name in ("01.perplexity", "01.vocab", "01.bptt", "01.bpe_merge"):
        assert f"01_stubs.ipynb  {name}" in out
    assert "01_stubs.ipynb: cell 12 raised ZeroDivisionError: division by zero" in out
    assert "0 of 4 exercises passed" in out


def test_the_solutions_pass(tmp_path, capsys):
    path = notebook(tmp_path / "01_solutions.ipynb", "01", solved=True)
    code, out, err = grade([path], capsys)
    assert code == 0, out + err
    assert "4 of 4 exercises passed in 1 notebook" in out
    assert out.count("  passed  passed (") == 4


def test_a_typical_mistake_and_the_teachers_own_checks(tmp_path, capsys):
    path = notebook(tmp_path / "01_alice.ipynb", "01", solved=True, replace={"01.perplexity": MISTAKE},
                    extra=["words = 'the cat sat'.split()"])
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "extra.py").write_text(
        "def check_words_are_defined(ns):\n    assert ns['words'] == ['the', 'cat', 'sat']\n\n\n"
        "def check_a_loss_plot(ns):\n    assert 'loss_figure' in ns, 'draw the loss curve into loss_figure'\n\n\n"
        "def helper_is_not_a_check(ns):\n    raise RuntimeError('not called')\n")
    code, out, err = grade([path, "--tests", checks, "--json", tmp_path / "out.json"], capsys)
    assert code == 1, out + err
    nb = json.loads((tmp_path / "out.json").read_text())["notebooks"][0]
    by_name = rows(nb)
    assert by_name["01.perplexity"]["status"] == "failed"
    assert "summed, not averaged" in by_name["01.perplexity"]["message"]
    assert "Likely mistake: the log-probabilities were summed, not averaged" in out
    assert [by_name[n]["status"] for n in ("01.vocab", "01.bptt", "01.bpe_merge")] == ["passed"] * 3
    teacher = {n: r for n, r in by_name.items() if r["source"] == "teacher"}
    assert {n: r["status"] for n, r in teacher.items()} == {"extra.py::check_words_are_defined": "passed",
                                                              "extra.py::check_a_loss_plot": "failed"}
    assert teacher["extra.py::check_a_loss_plot"]["message"] == "draw the loss curve into loss_figure"
    assert re.search(r"01_alice.ipynb +extra.py::check_a_loss_plot +FAILED +draw the loss curve into loss_figure", out)
    assert nb["errors"] == []


def test_a_cell_past_the_timeout_is_interrupted_and_a_dead_kernel_is_reported(tmp_path, capsys):
    path = tmp_path / "plain.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import time\ntime.sleep(60)"),
                nbformat.v4.new_code_cell("open('after', 'w').write('ran')"),
                nbformat.v4.new_code_cell("import os\nos._exit(3)"), nbformat.v4.new_code_cell("print('never')")]
    nbformat.write(nb, path)
    code, out, err = grade([path, "--timeout", "3", "--json", tmp_path / "out.json"], capsys)
    report = json.loads((tmp_path / "out.json").read_text())["notebooks"][0]
    assert code == 1  # no exercise at all passes nothing
    assert [(e["cell"], e["ename"]) for e in report["errors"]] == [(0, "Timeout"), (2, "DeadKernelError")]
    assert (tmp_path / "after").read_text() == "ran"  # the cell after the interrupted one ran
    assert report["kernel"] == "died" and "encryption" not in report["errors"][1]["evalue"]
    assert "0 of 0 exercises passed" in out


@pytest.mark.parametrize(("make", "said"), [
    (lambda d: d / "missing.ipynb", "no notebook '{}': the file does not exist"),
    (lambda d: (d / "notes.txt").write_text("hello\n") and d / "notes.txt", "{} is not a Jupyter notebook"),
    (lambda d: (d / "empty.ipynb").write_text("{}") and d / "empty.ipynb", "{} is not a Jupyter notebook"),
    (lambda d: d, "the notebook {} is a folder"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, said):
    path = make(tmp_path)
    code, out, err = grade([path], capsys)
    assert code == 2
    assert err.startswith("labkit: error: " + said.format(path)) and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""


def test_a_missing_tests_folder_is_an_error_before_any_kernel_starts(tmp_path, capsys):
    path = notebook(tmp_path / "01_x.ipynb", "01", solved=False)
    code, out, err = grade([path, "--tests", tmp_path / "nope"], capsys)
    assert code == 2 and "labkit: error: --tests" in err and "grading" not in err
