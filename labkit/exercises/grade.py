"""`labkit grade`: run students' notebooks with a real kernel and collect their exercises' checks.

Each notebook runs headless (nbclient) in its own kernel, in its own folder, with the smoke settings
(LABKIT_PROFILE=smoke, LABKIT_OFFLINE=1, runs in a temporary LABKIT_RUNS) and LABKIT_GRADE_FILE
naming a file where every `check(...)` appends its verdict. A cell that raises does not stop the
notebook: the error is reported and the later cells run. A teacher's own checks (`--tests DIR`: the
functions named check_* in DIR's Python files, each given the notebook's namespace) run in the
kernel after the last cell and are reported beside the exercises.

The exercises a notebook must have are those of its number (a file named 03_... has notebook 03's),
and any other whose check the notebook calls; one never checked is "not run".
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labkit import __version__
from labkit.atomic import MiB, read_bounded, write_atomic
from labkit.errors import LabkitError
from labkit.exercises.core import EXERCISES, FAILED, GRADE_FILE, NOT_DONE, PASSED, Result, names, record

NOT_RUN = "not run"
MARKS = {PASSED: "passed", FAILED: "FAILED", NOT_DONE: "not done", NOT_RUN: "not run"}


def read_notebook(path: Path) -> Any:
    """The notebook at `path`, or a LabkitError that says why it is not one."""
    import nbformat

    if not path.exists():
        raise LabkitError(f"no notebook {str(path)!r}: the file does not exist")
    text = read_bounded(path, 64 * MiB, "notebook")
    try:
        nb = nbformat.reads(text.decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # JSON, UTF-8 or schema: one line that names the file
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise LabkitError(f"{path} is not a Jupyter notebook ({reason})") from None
    return nb


def expected(path: Path, nb: Any) -> list[str]:
    """The exercises `path` must have: its number's, then any other its cells check."""
    own = names(path.name) if path.name[:2].isdigit() else []
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return own + [n for n in EXERCISES if n not in own and (f'"{n}"' in code or f"'{n}'" in code)]


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set inside the block (a kernel started there inherits them)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


TEACHER_CELL = "from labkit.exercises.grade import run_teacher_checks as _labkit_teacher\n_labkit_teacher({!r}, dict(globals()))"


def run_notebook(path: Path, nb: Any, *, tests: Path | None, timeout: float, env: dict[str, str],
                 log: Path) -> dict[str, Any]:
    """Run every cell of `nb` (errors allowed), then the teacher's checks: the cells that raised,
    and whether the kernel lived to the end. The kernel process's own messages go to `log`."""
    import nbformat

    try:
        from nbclient import NotebookClient
        from nbclient.exceptions import DeadKernelError
    except ImportError:
        raise LabkitError("labkit grade needs nbclient and ipykernel: pip install nbclient ipykernel") from None
    from labkit.notebook_exec import poll_in_slices

    errors: list[dict[str, Any]] = []
    if tests is not None:  # run after the last cell (the notebook is a copy in memory, never saved)
        nb.cells.append(nbformat.v4.new_code_cell(TEACHER_CELL.format(str(tests))))
    cells = nb.cells

    def on_error(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        content = execute_reply["content"]
        first = next((line for line in cell.source.splitlines() if line.strip()), "")
        errors.append({"cell": cell_index, "ename": content.get("ename", "Error"),
                       "evalue": str(content.get("evalue", ""))[:500], "source": first[:120]})

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
                            error_on_timeout={"ename": "Timeout", "evalue": f"the cell ran longer than {timeout:g} s",
                                              "traceback": []},
                            on_cell_error=on_error, resources={"metadata": {"path": str(path.parent)}})
    alive, at = True, 0
    with environment(env), open(log, "wb") as kernel_log, contextlib.ExitStack() as kernel:
        try:
            kernel.enter_context(client.setup_kernel(stderr=kernel_log))
        except Exception as e:  # no kernel could start: a setup problem, said in one line
            raise LabkitError(f"could not start a Python kernel for {path} ({type(e).__name__}: {e}); labkit grade "
                              "needs ipykernel (pip install ipykernel)") from None
        poll_in_slices(client.kc.shell_channel)
        poll_in_slices(client.kc.iopub_channel)
        try:
            for at, cell in enumerate(cells):
                client.execute_cell(cell, at)
        except DeadKernelError:
            alive = False
            said = [line for line in log.read_text(errors="replace").strip().splitlines()
                    if "without encryption" not in line][-3:]  # ipykernel's warning on every start is no reason
            errors.append({"cell": at, "ename": "DeadKernelError",
                           "evalue": "the kernel died: the cells after it did not run"
                                     + (f" (it said: {' | '.join(said)})" if said else ""),
                           "source": next((line for line in cells[at].source.splitlines() if line.strip()), "")[:120]})
    return {"errors": errors, "kernel": "ran to the end" if alive else "died"}


def verdicts(grade_file: Path) -> list[dict[str, Any]]:
    """What the checks recorded, the last verdict of each name kept (in the order first seen)."""
    found: dict[str, dict[str, Any]] = {}
    if grade_file.is_file():
        for line in grade_file.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                item = json.loads(line)
                found[str(item["exercise"])] = {"exercise": str(item["exercise"]), "status": str(item["status"]),
                                                "message": str(item.get("message", "")),
                                                "source": str(item.get("source", "check"))}
    return list(found.values())


def grade_notebook(path: Path, *, tests: Path | None, timeout: float, profile: str) -> dict[str, Any]:
    nb = read_notebook(path)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="labkit-grade-") as tmp:
        grade_file = Path(tmp) / "checks.jsonl"
        env = {"LABKIT_PROFILE": profile, "LABKIT_OFFLINE": "1", "LABKIT_RUNS": str(Path(tmp) / "runs"),
               GRADE_FILE: str(grade_file)}
        ran = run_notebook(path, nb, tests=tests, timeout=timeout, env=env, log=Path(tmp) / "kernel.log")
        recorded = {v["exercise"]: v for v in verdicts(grade_file)}
    never = "its check never ran: the check cell is missing, or a cell before it failed"
    rows = [recorded.pop(n, {"exercise": n, "status": NOT_RUN, "message": never, "source": "check"})
            for n in expected(path, nb)]
    rows += list(recorded.values())  # checks of exercises from elsewhere, and the teacher's
    counts = {status: sum(r["status"] == status for r in rows) for status in MARKS}
    return {"notebook": str(path), "passed": bool(rows) and counts[PASSED] == len(rows), "counts": counts,
            "seconds": round(time.perf_counter() - start, 1), "kernel": ran["kernel"], "exercises": rows,
            "errors": ran["errors"]}


def run_teacher_checks(directory: str, namespace: dict[str, Any]) -> None:
    """In the kernel: call every check_* function of the Python files in `directory` with the
    notebook's namespace and record each verdict (an AssertionError's message is the failure)."""
    for file in sorted(Path(directory).glob("*.py")):
        try:
            spec = importlib.util.spec_from_file_location(f"labkit_teacher_{file.stem}", file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        except Exception as e:
            record(Result(file.name, FAILED, f"the teacher's file could not be loaded: {type(e).__name__}: {e}"), "teacher")
            continue
        for name, fn in list(vars(module).items()):
            if name.startswith("check_") and callable(fn):
                record(_teacher_verdict(f"{file.name}::{name}", fn, namespace), "teacher")


def _teacher_verdict(name: str, fn: Any, namespace: dict[str, Any]) -> Result:
    try:
        fn(namespace)
    except AssertionError as e:
        line = traceback.extract_tb(e.__traceback__)[-1].line
        return Result(name, FAILED, str(e) or f"assertion failed: {line}")
    except NotImplementedError:
        return Result(name, NOT_DONE, "not done yet: it calls a function whose stub is unfinished")
    except Exception as e:
        return Result(name, FAILED, f"{type(e).__name__}: {e}")
    return Result(name, PASSED, "passed")


def table(reports: list[dict[str, Any]]) -> str:
    """The verdicts as a plain-text table (of each message, its likely mistake, else its first line),
    then the cells that raised."""
    rows = [("notebook", "exercise", "result", "message")]
    for rep in reports:
        for r in rep["exercises"]:
            lines = r["message"].splitlines() or [""]
            said = next((line for line in lines if line.startswith("Likely mistake: ")), lines[0])  # the teaching line
            rows.append((rep["notebook"], r["exercise"], MARKS.get(r["status"], r["status"]),
                         said if len(said) <= 120 else said[:117] + "..."))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    for rep in reports:
        lines += [f"{rep['notebook']}: cell {e['cell']} raised {e['ename']}: {(e['evalue'] + chr(10)).splitlines()[0]}"
                  for e in rep["errors"]]
    return "\n".join(line.rstrip() for line in lines)


def grade(notebooks: list[str], *, tests: str | None = None, json_out: str | None = None, timeout: float = 600,
          profile: str = "smoke") -> int:
    """Grade `notebooks`; print the table, write the JSON; 0 when every exercise passed, else 1."""
    paths = [Path(n).expanduser() for n in notebooks]
    for path in paths:
        read_notebook(path)  # every input checked before the first kernel starts
    folder = None if tests is None else Path(tests).expanduser().resolve()
    if folder is not None and not folder.is_dir():
        raise LabkitError(f"--tests {tests}: not a folder of Python files with check_* functions")
    if folder is not None and not any(folder.glob("*.py")):
        raise LabkitError(f"--tests {tests}: the folder holds no Python files")
    reports = []
    for path in paths:
        print(f"grading {path} ...", file=sys.stderr, flush=True)
        reports.append(grade_notebook(path, tests=folder, timeout=timeout, profile=profile))
    passed = all(r["passed"] for r in reports)
    print(table(reports))
    done = sum(r["counts"][PASSED] for r in reports)
    total = sum(len(r["exercises"]) for r in reports)
    print(f"\n{done} of {total} exercises passed in {len(reports)} notebook{'s' * (len(reports) != 1)}"
          + (f"; the report: {json_out}" if json_out else ""))
    if json_out:
        write_atomic(Path(json_out).expanduser(), json.dumps(
            {"labkit": __version__, "graded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "profile": profile,
             "passed": passed, "notebooks": reports}, indent=2, ensure_ascii=False) + "\n")
    return 0 if passed else 1
