"""`labkit grade`: run students' notebooks and collect what their exercises' checks said."""

from __future__ import annotations

import argparse
from typing import Any

from labkit.cli.common import HelpFormatter, bounded


def cmd_grade(args: argparse.Namespace) -> int:
    from labkit.exercises.grade import grade  # loads torch: not for --help

    return grade(args.notebooks, tests=args.tests, json_out=args.json, timeout=args.timeout, profile=args.profile)


def add_grade(sub: Any) -> None:
    p = sub.add_parser("grade", help="run students' notebooks with a kernel and report their exercises",
                       formatter_class=HelpFormatter, description=(
                           "Run each notebook headless with a real kernel, in its own folder, with the smoke "
                           "settings\n(LABKIT_PROFILE=smoke, LABKIT_OFFLINE=1, runs in a temporary folder), then "
                           "print a table of its\nexercises: passed, failed (with the check's message), not done "
                           "(the stub is unfinished) or not run.\nA cell that raises does not stop the notebook: "
                           "it is reported and the later cells run.\nExit status: 0 when every exercise of every "
                           "notebook passed, 1 otherwise, 2 on bad input."),
                       epilog="examples:\n  labkit grade alice/03_transformer_language_model.ipynb\n"
                              "  labkit grade submissions/*/0[1-6]_*.ipynb --json grades.json\n"
                              "  labkit grade 02_rnn_language_model.ipynb --tests my_checks/ --timeout 300\n\n"
                              "A notebook's exercises are those of its number (03_... has notebook 03's) and any "
                              "other it checks.\n--tests DIR: the functions named check_* in DIR's Python files "
                              "run in the kernel after the\nlast cell, each given the notebook's namespace (a dict "
                              "of its globals); an AssertionError\nfails it, with its message. See docs/teaching.md.")
    p.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help="the students' notebooks (.ipynb)")
    p.add_argument("--tests", metavar="DIR", help="a folder of the teacher's own checks (Python files with check_* "
                   "functions taking the notebook's namespace)")
    p.add_argument("--json", metavar="OUT", help="write the report here as JSON: per notebook, each exercise's "
                   "status and message, and the cells that raised")
    p.add_argument("--timeout", type=bounded(float, 0, above=True), default=600.0, metavar="S",
                   help="at most S seconds per cell; a cell that runs longer is interrupted and reported")
    p.add_argument("--profile", choices=("smoke", "cpu", "gpu"), default="smoke",
                   help="the notebooks' size profile (LABKIT_PROFILE)")
    p.set_defaults(func=cmd_grade)
