"""Demo models: a tiny LSTM and a tiny Transformer, trained in under 3 minutes on a 2-core CPU
(measured with other jobs running: 75 s on WikiText-2, 18 s on the synthetic corpus), so that a
fresh clone with no runs and no data has something real to look at.

They train on WikiText-2 when its files are already on disk (nothing is downloaded), else on
labkit's own synthetic corpus (`labkit.data.synthetic`). Each run stops at `DEMO_STEPS` steps
or `DEMO_BUDGET_S` seconds of training, whichever comes first, which bounds the total time.

The app starts them in a separate process (`start_demo`, i.e. `labkit demo ROOT`, which trains them
with `labkit.experiments.train_demo_models`): the process id goes into each run's card, so a demo
killed half-way shows as interrupted, and `demo_progress` reports how far it is from the runs' own
metrics files. This module trains nothing itself, so the app that imports it never loads the trainer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from labkit.atomic import write_atomic
from labkit.data.corpora import locate
from labkit.errors import LabkitError
from labkit.inspect.curves import last_step
from labkit.runs import pid_alive, read_info

DEMO_RUNS = {"demo-lstm": "tiny-lstm", "demo-transformer": "tiny-transformer"}
DEMO_STEPS = 1000
DEMO_BUDGET_S = 60.0
JOB_FILE = ".demo.json"  # in the runs root; dot-names are not listed as runs
LOG_FILE = ".demo.log"


def wikitext2_on_disk() -> bool:
    """Whether WikiText-2 can be read without downloading it."""
    try:
        for name in ("train.txt", "valid.txt", "test.txt"):
            locate("wikitext-2", name, download=False)
    except LabkitError:
        return False
    return True


def demo_names(root: str | Path) -> dict[str, str]:
    """Run name -> preset, with a numeric suffix when a name is taken (demo-lstm-2, ...)."""
    root = Path(root)
    for n in range(1, 1000):
        suffix = "" if n == 1 else f"-{n}"
        names = {f"{name}{suffix}": preset for name, preset in DEMO_RUNS.items()}
        if not any((root / name).exists() for name in names):
            return names
    raise LabkitError(f"{root} already holds a thousand demo runs; delete some")


# --- as a background job ----------------------------------------------------------------
@dataclass
class DemoProgress:
    active: bool  # the training process is still alive
    fraction: float  # 0..1, by steps done over steps planned
    steps: dict[str, tuple[int, int]]  # run -> (steps done, steps planned)
    finished: bool  # every run's card says finished
    corpus: str
    started_at: float
    log_tail: str = ""
    runs: list[str] = field(default_factory=list)


def start_demo(root: str | Path, *, steps: int | None = None) -> int:
    """Start `labkit demo ROOT` in the background; returns its process id."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    steps = steps or DEMO_STEPS
    corpus = "wikitext-2" if wikitext2_on_disk() else "synthetic"
    names = demo_names(root)
    log = open(root / LOG_FILE, "wb")  # noqa: SIM115 (the child owns it)
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "demo", str(root), "--steps", str(steps),
                             "--corpus", corpus, "--names", *names],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    # Reap the child when it ends, so its id stops answering as alive (no zombie).
    threading.Thread(target=proc.wait, daemon=True).start()
    write_atomic(root / JOB_FILE, json.dumps({"pid": proc.pid, "runs": list(names), "steps": steps,
                                              "corpus": corpus, "started_at": time.time()}))
    return proc.pid


def demo_progress(root: str | Path) -> DemoProgress | None:
    """How far the last demo started in `root` got; None if none was started there."""
    root = Path(root)
    try:
        job = json.loads((root / JOB_FILE).read_text(encoding="utf-8"))
        runs, planned = list(job["runs"]), int(job["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    steps, finished, done = {}, True, 0
    for name in runs:
        steps[name] = (min(last_step(root / name), planned), planned)
        run_done = (read_info(root / name).card or {}).get("status") == "finished"
        finished &= run_done
        done += planned if run_done else steps[name][0]  # a run may end early, at its time budget
    total = max(1, sum(p for _, p in steps.values()))
    try:
        tail = (root / LOG_FILE).read_text(encoding="utf-8", errors="replace")[-2000:]
    except OSError:
        tail = ""
    return DemoProgress(active=pid_alive(job.get("pid")), fraction=1.0 if finished else done / total,
                        steps=steps, finished=finished, corpus=str(job.get("corpus", "?")),
                        started_at=float(job.get("started_at", 0)), log_tail=tail, runs=runs)
