"""`labkit app`: the Streamlit app, local only and without usage statistics, from any folder.

Streamlit reads `.streamlit/config.toml` from the current folder only: `streamlit run
app/main.py` started anywhere else listens on every interface with usage statistics on. This
command passes those settings explicitly (they beat every config file), finds the app next to
the installed package, and hands the process over to Streamlit (exec: signals reach the server).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from labkit.cli.common import HelpFormatter, bounded
from labkit.errors import LabkitError

LOCAL_ONLY = ("--server.address", "127.0.0.1", "--browser.serverAddress", "127.0.0.1",
              "--server.headless", "true", "--browser.gatherUsageStats", "false")


def app_script() -> Path:
    """app/main.py of the source folder labkit is installed from (`pip install -e .`)."""
    import labkit

    script = Path(labkit.__file__).resolve().parents[1] / "app" / "main.py"
    if not script.is_file():
        raise LabkitError(f"the app is not installed with this labkit (no {script}): install labkit from "
                          "its source folder with `pip install -e .`")
    return script


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The command that serves the app: the local-only settings, the port, then what was passed on
    (which may change a setting on purpose: --server.address 0.0.0.0 serves a classroom). In class
    mode no file watcher: an edit to labkit's files must not reload its modules under a class."""
    passed = [a for a in args.passed_on if a != "--"]
    watcher = ("--server.fileWatcherType", "none") if getattr(args, "class_mode", False) else ()
    return [sys.executable, "-m", "streamlit", "run", str(app_script()), *LOCAL_ONLY, *watcher,
            "--server.port", str(args.port), *passed]


def cmd_app(args: argparse.Namespace) -> int:
    command = streamlit_command(args)
    if args.runs_dir:  # the app's default runs folder
        os.environ["LABKIT_RUNS"] = str(Path(args.runs_dir).expanduser().resolve())
    if args.class_mode:  # one runs folder for everyone, fixed; one thread per computation, one per core at once
        os.environ["LABKIT_CLASS"] = "1"
        os.environ["LABKIT_RUNS"] = str(Path(os.environ.get("LABKIT_RUNS") or "runs").expanduser().resolve())
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"labkit app: http://127.0.0.1:{args.port} (runs: {os.environ.get('LABKIT_RUNS', 'runs')})",
          file=sys.stderr, flush=True)
    os.execv(command[0], command)
    return 0  # not reached: the process is Streamlit now


def add_app(sub: Any) -> None:
    p = sub.add_parser("app", help="serve the Streamlit app on this machine (127.0.0.1)",
                       formatter_class=HelpFormatter, description=(
                           "Start the app in app/main.py, from any folder, listening on 127.0.0.1 only and "
                           "with Streamlit's usage\nstatistics off. Other options are passed on to "
                           "`streamlit run` (see streamlit run --help)."),
                       epilog="examples:\n  labkit app\n  labkit app --port 8600 --runs-dir ~/experiments\n"
                              "  labkit app --class --runs-dir ~/course-runs --server.address 0.0.0.0\n"
                              "  labkit app --theme.base dark")
    p.add_argument("--port", type=bounded(int, 1, 65535), default=8501, metavar="N", help="the port to listen on")
    p.add_argument("--runs-dir", metavar="DIR", help="the runs folder the app opens (default: $LABKIT_RUNS, "
                   "else ./runs); the folder box accepts folders under it or under the folder the app starts in")
    p.add_argument("--class", dest="class_mode", action="store_true",
                   help="class mode: every session sees the runs folder, fixed (no folder box); the demo button "
                        "is off and trainings go to one queue (the Train page); one thread per computation")
    p.set_defaults(func=cmd_app, passed_on=[])
