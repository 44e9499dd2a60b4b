"""Demo models, so that a fresh clone with no runs has something real to look at: an LSTM and a
Transformer language model, both fine-tuned on a sentence task, and the LSTM's network trained
on that task from scratch (the fair test of what pretraining bought).

- With WikiText-2 on disk (nothing is downloaded): the `demo-*` presets (docs/results.md, "The
  demo models"), then SST-2 when its files are on disk too (else the `number` task).
- Offline, with no corpora: the `tiny-*` presets on labkit's own synthetic corpus
  (`labkit.data.synthetic`), then the `number` task, in seconds.

Every stage is bound by **steps**, never by time: a slow or busy machine makes the same models,
later. The plan carries each stage's time on the reference machine (a quiet 2-core CPU), so the
progress panel can say how far the demo is and, from the pace measured so far, how long it has left.

The app starts the demo in a separate process (`start_demo`, i.e. `labkit demo ROOT`, which trains
with `labkit.experiments.train_demo_models`): the process id goes into each run's card, so a demo
killed half-way shows as interrupted. The process reports its phase (`StatusFile`, a trainer
callback that imports nothing of the trainer) and `demo_progress` reads it with the runs' own
metrics. This module trains nothing itself, so the app that imports it never loads the trainer.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labkit.atomic import write_atomic
from labkit.data.corpora import locate
from labkit.errors import LabkitError
from labkit.presets import PRESETS
from labkit.runs import pid_alive, read_info, run_metrics

DEMO_RUNS = {"demo-lstm": "lstm", "demo-transformer": "transformer"}  # name -> family
DEMO_STEPS: int | None = None  # every stage's steps (tests); None: each stage's own
JOB_FILE = ".demo.json"  # in the runs root; dot-names are not listed as runs
STATUS_FILE = ".demo-status.json"  # written by the training process: which run, which phase
LOG_FILE = ".demo.log"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

# Each stage's seconds on the reference machine (a quiet 2-core CPU with bf16, docs/results.md "The
# demo models"), evaluations, checkpoints and loading included: the unit the progress panel counts
# in, so that its bar moves with the demo's real work. The language models' steps are their presets'
# (labkit.presets); the classifiers' are here.
STAGES = {
    "wikitext-2": {"lm": {"lstm": 85.0, "transformer": 130.0}, "finetune": {"lstm": 11.0, "transformer": 22.0},
                   "scratch": 11.0, "classifier_steps": 200, "start_s": 10.0},
    "synthetic": {"lm": {"lstm": 3.0, "transformer": 4.0}, "finetune": {"lstm": 2.0, "transformer": 2.0},
                  "scratch": 2.0, "classifier_steps": 60, "start_s": 2.0},
}


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


def classifier_name(lm_name: str, task: str, *, scratch: bool = False) -> str:
    return f"{lm_name}-{task}" + ("-scratch" if scratch else "")


@dataclass(frozen=True)
class Stage:
    """One run the demo trains."""

    run: str
    kind: str  # "lm" (pretraining), "finetune" (a pretrained body on the task), "scratch" (random weights)
    family: str  # "lstm" or "transformer"
    steps: int
    reference_s: float  # its time on the reference machine, evaluations included
    base: str | None = None  # the language-model run a classifier's network comes from


def check_names(names: Iterable[str]) -> None:
    """Demo run names are plain folder names (no path, no leading dot), all different."""
    names = list(names)
    for name in names:
        if not NAME.fullmatch(name):
            raise LabkitError(f"{name[:60]!r} is not a plain run name: use up to 100 letters, digits, '.', '_' and "
                              "'-', starting with a letter or digit (no '/')")
    if len(set(names)) != len(names):
        raise LabkitError(f"the demo runs need different names, got {' and '.join(names)}")


def demo_plan(names: dict[str, str], corpus: str, task: str, steps: int | None = None) -> list[Stage]:
    """The stages, in order: each language model (name -> family), each one fine-tuned on `task`, then
    the LSTM's network trained on `task` from scratch. `steps` replaces every stage's own."""
    check_names(names)
    table = STAGES["synthetic" if corpus == "synthetic" else "wikitext-2"]

    def sized(n: int, seconds: float) -> tuple[int, float]:
        return (steps, seconds * steps / n) if steps else (n, seconds)

    lm_steps = {family: PRESETS[demo_preset(corpus, family)]["train"]["max_steps"] for family in set(names.values())}
    n = table["classifier_steps"]
    plan = [Stage(name, "lm", family, *sized(lm_steps[family], table["lm"][family])) for name, family in names.items()]
    plan += [Stage(classifier_name(name, task), "finetune", family, *sized(n, table["finetune"][family]), base=name)
             for name, family in names.items()]
    lstm = next(name for name, family in names.items() if family == "lstm")
    plan.append(Stage(classifier_name(lstm, task, scratch=True), "scratch", "lstm", *sized(n, table["scratch"]),
                      base=lstm))
    check_names(stage.run for stage in plan)
    return plan


def demo_names(root: str | Path, task: str | None = None) -> dict[str, str]:
    """Run name -> family, with a numeric suffix when a name is taken (demo-lstm-2, ...), the
    fine-tuned runs' names (demo-lstm-sst2, ...) included."""
    root = Path(root)
    for n in range(1, 1000):
        suffix = "" if n == 1 else f"-{n}"
        names = {f"{name}{suffix}": family for name, family in DEMO_RUNS.items()}
        taken = [stage.run for t in ((task,) if task else ("sst2", "number")) for stage in demo_plan(names, "", t)]
        if not any((root / name).exists() for name in taken):
            return names
    raise LabkitError(f"{root} already holds a thousand demo runs; delete some")


# --- as a background job ----------------------------------------------------------------
class StatusFile:
    """Trainer callback for the demo's process: which run it trains and in which phase, written
    (atomically) to STATUS_FILE for `demo_progress`. It keeps no reference to the trainer."""

    def __init__(self, root: str | Path, run: str):
        self.path, self.run = Path(root) / STATUS_FILE, run

    def write(self, phase: str, step: int = 0) -> None:
        try:
            write_atomic(self.path, json.dumps({"run": self.run, "phase": phase, "step": step, "at": time.time()}))
        except (OSError, LabkitError):
            pass  # the progress panel is a view: a failed write must not stop training

    def on_step(self, trainer: Any, record: dict[str, Any]) -> None:
        self.write("training", int(record["step"]))

    def on_eval_start(self, trainer: Any, record: dict[str, Any]) -> None:
        phase = "testing" if record["split"] == "test" else ("validating (whole split)" if record.get("whole")
                                                              and record["split"] == "valid" else "evaluating")
        self.write(phase, int(record["step"]))

    def on_eval(self, trainer: Any, record: dict[str, Any]) -> None:
        self.write("training", int(record["step"]))

    def on_end(self, trainer: Any, card: dict[str, Any]) -> None:
        self.write("done", int(card.get("steps") or 0))


@dataclass
class StageProgress:
    stage: Stage
    step: int  # last step logged
    finished: bool

    @property
    def fraction(self) -> float:
        if self.finished:
            return 1.0
        return min(self.step / max(self.stage.steps, 1), 0.98)  # evaluations and the card still to come


@dataclass
class DemoProgress:
    active: bool  # the training process is still alive
    finished: bool  # every run's card says finished
    corpus: str
    started_at: float
    stages: list[StageProgress]
    start_s: float = 0.0  # reference seconds before the first stage (loading the corpus)
    phase: dict[str, Any] = field(default_factory=dict)  # the process's last status: run, phase, step
    log_tail: str = ""
    now: float = field(default_factory=time.time)

    @property
    def runs(self) -> list[str]:
        return [s.stage.run for s in self.stages]

    @property
    def steps(self) -> dict[str, tuple[int, int]]:
        return {s.stage.run: (s.step, s.stage.steps) for s in self.stages}

    @property
    def reference_s(self) -> float:
        return self.start_s + sum(s.stage.reference_s for s in self.stages)

    @property
    def done_s(self) -> float:
        """Reference seconds of the work done so far."""
        started = bool(self.phase) or any(s.step or s.finished for s in self.stages)
        return (self.start_s if started else 0.0) + sum(s.stage.reference_s * s.fraction for s in self.stages)

    @property
    def fraction(self) -> float:
        return 1.0 if self.finished else min(self.done_s / max(self.reference_s, 1e-9), 0.99)

    @property
    def elapsed_s(self) -> float:
        return max(0.0, self.now - self.started_at)

    @property
    def pace(self) -> float | None:
        """This machine's seconds per reference second so far (None until there is enough to tell)."""
        done = self.done_s
        return self.elapsed_s / done if done >= 0.05 * self.reference_s and self.elapsed_s > 0 else None

    @property
    def eta_s(self) -> float | None:
        pace = self.pace
        return None if pace is None else pace * (self.reference_s - self.done_s)

    @property
    def current(self) -> StageProgress | None:
        """The stage the process is at: the one its status names, else the first unfinished one."""
        named = next((s for s in self.stages if s.stage.run == self.phase.get("run")), None)
        if named is not None and not named.finished:
            return named
        return next((s for s in self.stages if not s.finished), None)

    def describe(self) -> str:
        """One line: the stage, its phase and step, the share of the demo done and the time left."""
        if self.finished:
            return f"Done: {len(self.stages)} runs in {minutes(self.elapsed_s)}."
        now = self.current
        if now is None:
            return "Writing the last results..."
        k = self.stages.index(now) + 1
        what = {"lm": "pretraining", "finetune": "fine-tuning", "scratch": "training from scratch"}[now.stage.kind]
        phase = self.phase.get("phase") if self.phase.get("run") == now.stage.run else None
        if phase is None and not now.step:
            doing = "loading the data" if k == 1 else "starting"
        elif phase in ("evaluating", "testing", "validating (whole split)"):
            doing = f"{phase} at step {now.step:,}"
        else:
            doing = f"step {now.step:,} of {now.stage.steps:,}"
        line = f"Stage {k} of {len(self.stages)}, {what} {now.stage.run}: {doing}. {self.fraction:.0%} of the demo done"
        eta, pace = self.eta_s, self.pace
        if eta is None:
            return line + f"; about {minutes(self.reference_s)} in all on a quiet 2-core CPU."
        return line + (f"; about {minutes(eta)} left at this machine's pace"
                       + (f" ({pace:.1f}x the reference machine's time)." if pace >= 1.5 else "."))


def minutes(seconds: float) -> str:
    """"40 s", "3 min", "1 h 5 min": a duration as a person says it."""
    if seconds < 90:
        return f"{max(5, round(seconds / 5) * 5):.0f} s"
    if seconds < 3600:
        return f"{round(seconds / 60):.0f} min"
    return f"{int(seconds // 3600)} h {round(seconds % 3600 / 60):.0f} min"


def start_demo(root: str | Path, *, steps: int | None = None) -> int:
    """Start `labkit demo ROOT` in the background; returns its process id."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    steps = steps or DEMO_STEPS
    corpus = demo_corpus()
    task = demo_task(corpus)
    names = demo_names(root, task)
    plan = demo_plan(names, corpus, task, steps)
    log = open(root / LOG_FILE, "wb")  # noqa: SIM115 (the child owns it)
    (root / STATUS_FILE).unlink(missing_ok=True)
    command = [sys.executable, "-m", "labkit", "demo", str(root), "--corpus", corpus, "--names", *names]
    proc = subprocess.Popen(command + (["--steps", str(steps)] if steps else []),
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    # Reap the child when it ends, so its id stops answering as alive (no zombie).
    threading.Thread(target=proc.wait, daemon=True).start()
    table = STAGES["synthetic" if corpus == "synthetic" else "wikitext-2"]
    write_atomic(root / JOB_FILE, json.dumps({"pid": proc.pid, "plan": [asdict(s) for s in plan], "corpus": corpus,
                                              "task": task, "start_s": table["start_s"], "started_at": time.time()}))
    return proc.pid


def _stage_progress(path: Path, stage: Stage) -> StageProgress:
    records = run_metrics(path)
    steps = [r["step"] for r in records if isinstance(r.get("step"), int) and not isinstance(r.get("step"), bool)]
    finished = (read_info(path).card or {}).get("status") == "finished"
    return StageProgress(stage, min(max(steps, default=0), stage.steps), finished)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def demo_progress(root: str | Path) -> DemoProgress | None:
    """How far the last demo started in `root` got; None if none was started there (or its job
    file is damaged)."""
    root = Path(root)
    job = _read_json(root / JOB_FILE)
    try:
        plan = [Stage(**s) for s in job["plan"]]
        started_at, start_s = float(job.get("started_at", 0)), float(job.get("start_s", 0))
    except (KeyError, TypeError, ValueError):
        return None
    stages = [_stage_progress(root / s.run, s) for s in plan]
    phase = _read_json(root / STATUS_FILE)
    try:
        tail = (root / LOG_FILE).read_text(encoding="utf-8", errors="replace")[-2000:]
    except OSError:
        tail = ""
    return DemoProgress(active=pid_alive(job.get("pid")), finished=all(s.finished for s in stages),
                        corpus=str(job.get("corpus", "?")), started_at=started_at, stages=stages, start_s=start_s,
                        phase=phase if isinstance(phase, dict) else {}, log_tail=tail)
