"""Demo models, so that a fresh clone with no runs has something real to look at: an LSTM and a
Transformer language model, then the LSTM fine-tuned on a sentence task: under 3 minutes on a
2-core CPU with WikiText-2, seconds on the synthetic corpus (docs/results.md).

- With WikiText-2 on disk (nothing is downloaded): the `demo-*` presets, the laptop recipes with
  one layer, cut to about a minute of training each on the full vocabulary, then the LSTM fine-tuned on SST-2 when
  its files are on disk too (else on the `number` task).
- Offline, with no corpora: the `tiny-*` presets on labkit's own synthetic corpus
  (`labkit.data.synthetic`), then the `number` task (the head noun's number).
Each run stops at `DEMO_STEPS` steps or its time budget, whichever comes first.

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
from labkit.presets import PRESETS
from labkit.runs import pid_alive, read_info, run_metrics

DEMO_RUNS = {"demo-lstm": "lstm", "demo-transformer": "transformer"}  # name -> family
DEMO_STEPS = 1000
DEMO_BUDGET_S = 60.0  # training seconds per language model
FINETUNE_BUDGET_S = 20.0  # training seconds of the fine-tuning run
JOB_FILE = ".demo.json"  # in the runs root; dot-names are not listed as runs
LOG_FILE = ".demo.log"


def _on_disk(dataset: str, names: tuple[str, ...]) -> bool:
    try:
        for name in names:
            locate(dataset, name, download=False)
    except LabkitError:
        return False
    return True


def wikitext2_on_disk() -> bool:
    """Whether WikiText-2 can be read without downloading it."""
    return _on_disk("wikitext-2", ("train.txt", "valid.txt", "test.txt"))


def sst2_on_disk() -> bool:
    """Whether SST-2's train and dev splits can be read without downloading them."""
    return _on_disk("sst2", ("train.tsv", "dev.tsv"))


def demo_corpus() -> str:
    return "wikitext-2" if wikitext2_on_disk() else "synthetic"


def demo_task(corpus: str) -> str:
    """The fine-tuning task of the demo: SST-2 on WikiText-2 models when it is on disk, else `number`."""
    return "sst2" if corpus == "wikitext-2" and sst2_on_disk() else "number"


def demo_preset(corpus: str, family: str) -> str:
    return f"{'tiny' if corpus == 'synthetic' else 'demo'}-{family}"


def lm_budget(corpus: str, family: str) -> float:
    """Training seconds of a demo language model: its preset's time budget, else `DEMO_BUDGET_S`
    (the tiny presets, whose steps run out first)."""
    return PRESETS[demo_preset(corpus, family)]["train"].get("time_budget_s") or DEMO_BUDGET_S


def classifier_name(lstm_name: str, task: str) -> str:
    return f"{lstm_name}-{task}"


def demo_names(root: str | Path) -> dict[str, str]:
    """Run name -> family, with a numeric suffix when a name is taken (demo-lstm-2, ...); the
    fine-tuned run takes the LSTM's name and the task's (demo-lstm-sst2)."""
    root = Path(root)
    for n in range(1, 1000):
        suffix = "" if n == 1 else f"-{n}"
        names = {f"{name}{suffix}": family for name, family in DEMO_RUNS.items()}
        lstm = next(iter(names))
        taken = [*names, classifier_name(lstm, "sst2"), classifier_name(lstm, "number")]
        if not any((root / name).exists() for name in taken):
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
    corpus = demo_corpus()
    task = demo_task(corpus)
    names = demo_names(root)
    runs = [*names, classifier_name(next(iter(names)), task)]
    log = open(root / LOG_FILE, "wb")  # noqa: SIM115 (the child owns it)
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "demo", str(root), "--steps", str(steps),
                             "--corpus", corpus, "--names", *names],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    # Reap the child when it ends, so its id stops answering as alive (no zombie).
    threading.Thread(target=proc.wait, daemon=True).start()
    budgets = [lm_budget(corpus, family) for family in names.values()] + [FINETUNE_BUDGET_S]
    write_atomic(root / JOB_FILE, json.dumps({"pid": proc.pid, "runs": runs, "steps": steps, "budgets_s": budgets,
                                              "corpus": corpus, "started_at": time.time()}))
    return proc.pid


def _done(path: Path, planned: int, budget_s: float | None) -> tuple[int, float, bool]:
    """(last step, fraction done, finished) of a run that stops at `planned` steps or `budget_s` seconds."""
    records = run_metrics(path)
    step = min(max((int(r["step"]) for r in records if isinstance(r.get("step"), (int, float))), default=0), planned)
    elapsed = max((float(r["elapsed_s"]) for r in records if isinstance(r.get("elapsed_s"), (int, float))),
                  default=0.0)
    fraction = step / planned
    if budget_s:
        fraction = max(fraction, elapsed / budget_s)
    finished = (read_info(path).card or {}).get("status") == "finished"
    # A run may end early (validation stopped improving); one past its budget still evaluates.
    return step, 1.0 if finished else min(fraction, 0.99), finished


def demo_progress(root: str | Path) -> DemoProgress | None:
    """How far the last demo started in `root` got; None if none was started there."""
    root = Path(root)
    try:
        job = json.loads((root / JOB_FILE).read_text(encoding="utf-8"))
        runs, planned = list(job["runs"]), int(job["steps"])
        budgets = list(job.get("budgets_s") or [None] * len(runs))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    steps, fractions, finished = {}, [], True
    for name, budget in zip(runs, budgets):
        step, fraction, done = _done(root / name, planned, budget)
        steps[name] = (step, planned)
        fractions.append(fraction)
        finished &= done
    try:
        tail = (root / LOG_FILE).read_text(encoding="utf-8", errors="replace")[-2000:]
    except OSError:
        tail = ""
    return DemoProgress(active=pid_alive(job.get("pid")), fraction=sum(fractions) / max(1, len(fractions)),
                        steps=steps, finished=finished, corpus=str(job.get("corpus", "?")),
                        started_at=float(job.get("started_at", 0)), log_tail=tail, runs=runs)
