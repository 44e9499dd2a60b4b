"""A training queue for a server (the app's Train page): one worker thread trains one job at a time,
the others wait in line, in the order they came.

A job pretrains from a preset, fine-tunes a language-model run, or resumes a stopped run
(labkit.train.jobs: `Pretrain`, `Finetune`, `Resume`), through the same library functions as the
command line and into an ordinary run directory that the command line can resume.

`stop` stops a running job the way Ctrl-C does (Trainer.request_stop): the current step finishes,
a checkpoint is saved and the run's card says interrupted; no signal is sent, so the server goes
on. Every job writes only its own run directory, a plain name inside the runs folder it is given
(labkit.runs.safe_run_path); a corpus is read where it is on disk, never downloaded.
`default_queue()` is the process's one queue: one training at a time per server.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError, RunError
from labkit.runs import RunDir, safe_run_path
from labkit.train.callbacks import Callback
from labkit.train.interrupts import TrainingStopped
from labkit.train.jobs import Finetune, Pretrain, Resume

ACTIVE = ("waiting", "running", "stopping")  # a job's statuses before it ends; then one of ENDED
ENDED = ("finished", "stopped", "failed", "cancelled")
KEEP_ENDED = 200  # ended jobs remembered (the page shows how each ended); older ones are forgotten


@dataclass
class Job:
    """One job and how far it is (`TrainingQueue.status` hands out copies). `step`, `max_steps` and `loss` are
    the trainer's latest; `error` says why a job failed or how it stopped."""

    id: int
    runs_dir: Path
    name: str
    what: Pretrain | Finetune | Resume
    callbacks: tuple = ()
    status: str = "waiting"  # waiting, running, stopping, then finished, stopped, failed or cancelled
    step: int = 0
    max_steps: int | None = None
    loss: float | None = None
    error: str | None = None
    card: dict[str, Any] | None = None
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    trainer: Any = field(default=None, repr=False)  # while it trains: what `stop` asks

    @property
    def path(self) -> Path:
        return self.runs_dir / self.name

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


class _Watch(Callback):
    """The queue's own callback: the job's progress, and a stop asked for before the trainer existed."""

    def __init__(self, queue: TrainingQueue, job: Job):
        self.queue, self.job = queue, job

    def _seen(self, trainer: Any, record: dict[str, Any]) -> None:
        with self.queue._lock:
            job = self.job
            job.trainer, job.step, job.max_steps = trainer, record.get("step", job.step), trainer.config.max_steps
            if "loss" in record:
                job.loss = record["loss"]
            if job.status == "stopping":
                trainer.request_stop()

    on_step = on_eval_start = on_checkpoint = _seen


class TrainingQueue:
    """Jobs in line, trained one at a time by one worker thread (started with the first job)."""

    def __init__(self, keep: int = KEEP_ENDED):
        self._lock = threading.Condition()
        self._jobs: dict[int, Job] = {}
        self._next_id, self._keep, self._closed = 1, keep, False
        self._worker: threading.Thread | None = None

    # --- what callers do ----------------------------------------------------------------
    def submit(self, what: Pretrain | Finetune, runs_dir: str | Path, name: str | None = None,
               callbacks: Sequence[Any] = ()) -> int:
        """Put a new run in line; its id. `name`: the run's folder in `runs_dir` (None: named as the
        command line names it, with -2, -3, ... when that is taken); `callbacks`: more trainer
        callbacks (fresh ones for each job: a TimelineRecorder, a notebook's live plot)."""
        what.check()
        runs_dir = Path(runs_dir).expanduser().resolve()
        if isinstance(what, Finetune) and not RunDir(safe_run_path(runs_dir, what.base)).exists():
            raise LabkitError(f"no run {what.base!r} in {runs_dir} to fine-tune")
        with self._lock:
            if name is None:
                name = self._free_name(runs_dir, what.default_name())
            elif self._taken(runs_dir, name):
                raise RunError(f"{name!r} is taken in {runs_dir}: a run or a job in line has that name")
            return self._add(Job(0, runs_dir, name, what, tuple(callbacks)))

    def resume(self, runs_dir: str | Path, name: str, callbacks: Sequence[Any] = ()) -> int:
        """Put the stopped run `name` of `runs_dir` in line to continue from its latest checkpoint."""
        runs_dir = Path(runs_dir).expanduser().resolve()
        run = RunDir(safe_run_path(runs_dir, name))
        if not run.exists():
            raise LabkitError(f"no run {name!r} in {runs_dir} to resume")
        config = run.load_config()
        if config.get("kind", "lm") not in ("lm", "classifier") or (config.get("finetune") or {}).get("baseline"):
            raise LabkitError(f"{name} is not a run that trains steps: it cannot be resumed")
        if run.card_path.exists() and run.read_card().get("status") == "finished":
            raise LabkitError(f"{name} has finished: there is nothing to resume")
        with self._lock:
            if any(j.active and j.path == run.root for j in self._jobs.values()):
                raise LabkitError(f"{name} is in line already")
            return self._add(Job(0, runs_dir, name, Resume(), tuple(callbacks)))

    def stop(self, job_id: int) -> str:
        """Stop a running job as Ctrl-C does (at the end of its current step, with a checkpoint); a
        waiting job is cancelled. The job's status after it."""
        with self._lock:
            job = self._job(job_id)
            if job.status == "waiting":
                return self._cancel(job)
            if job.status == "running":
                job.status = "stopping"
                if job.trainer is not None:  # else _Watch asks, at the trainer's first event
                    job.trainer.request_stop()
            return job.status

    def cancel(self, job_id: int) -> str:
        """Take a waiting job out of line (a running one goes on: `stop` stops it)."""
        with self._lock:
            job = self._job(job_id)
            if job.status != "waiting":
                raise LabkitError(f"job {job_id} is {job.status}, not waiting: only a waiting job can be cancelled")
            return self._cancel(job)

    def status(self, job_id: int) -> Job:
        """A copy of the job as it is now."""
        with self._lock:
            return dataclasses.replace(self._job(job_id), trainer=None)

    def position(self, job_id: int) -> int | None:
        """0 for the running job, k for the k-th in line, None once it has ended."""
        with self._lock:
            job = self._job(job_id)
            if not job.active:
                return None
            if job.status != "waiting":
                return 0
            return 1 + sum(j.status == "waiting" and j.id < job.id for j in self._jobs.values())

    def jobs(self) -> list[Job]:
        """Copies of every job remembered, in the order they came."""
        with self._lock:
            return [dataclasses.replace(j, trainer=None) for j in self._jobs.values()]

    def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """The job once it has ended (or as it is after `timeout` seconds)."""
        with self._lock:
            self._lock.wait_for(lambda: not self._job(job_id).active, timeout)
            return dataclasses.replace(self._job(job_id), trainer=None)

    def shutdown(self, timeout: float | None = 60.0) -> None:
        """Take no more jobs, cancel the waiting ones, stop the running one (with a checkpoint) and
        wait up to `timeout` seconds for it."""
        with self._lock:
            self._closed = True
            for job in self._jobs.values():
                if job.status == "waiting":
                    self._cancel(job)
                elif job.status == "running":
                    job.status = "stopping"
                    if job.trainer is not None:
                        job.trainer.request_stop()
            self._lock.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)

    # --- the worker ---------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._closed or any(j.status == "waiting" for j in self._jobs.values()))
                if self._closed:
                    return
                job = next(j for j in self._jobs.values() if j.status == "waiting")
                job.status, job.started_at = "running", time.time()
            status, error, card = self._train(job)
            with self._lock:
                job.status, job.error, job.card, job.ended_at, job.trainer = status, error, card, time.time(), None
                self._forget_old()
                self._lock.notify_all()

    def _train(self, job: Job) -> tuple[str, str | None, dict[str, Any] | None]:
        """Train the job; how it ended (status, message, card). Nothing a job raises ends the worker."""
        try:
            safe_run_path(job.runs_dir, job.name)  # (checked again: the folder may have changed since)
            card = job.what.train(job.runs_dir, job.path, [_Watch(self, job), *job.callbacks])
        except TrainingStopped as e:  # Stop (a checkpoint is saved), or a loss that was not finite
            return ("stopped" if e.signal is not None else "failed"), str(e), None
        except Exception as e:  # noqa: BLE001 (a bad setting, a damaged run, no memory: the server goes on)
            _mark_failed(job.path, e)
            return "failed", f"{type(e).__name__}: {e}" if not isinstance(e, LabkitError) else str(e), None
        return "finished", None, card

    # --- bookkeeping (with the lock held) -----------------------------------------------
    def _add(self, job: Job) -> int:
        if self._closed:
            raise LabkitError("the training queue is shut down")
        job.id, self._next_id = self._next_id, self._next_id + 1
        self._jobs[job.id] = job
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="labkit-training-queue", daemon=True)
            self._worker.start()
        self._lock.notify_all()
        return job.id

    def _job(self, job_id: int) -> Job:
        if job_id not in self._jobs:
            raise LabkitError(f"no job {job_id} in the training queue")
        return self._jobs[job_id]

    def _cancel(self, job: Job) -> str:
        job.status, job.ended_at = "cancelled", time.time()
        self._lock.notify_all()
        return job.status

    def _taken(self, runs_dir: Path, name: str) -> bool:
        path = safe_run_path(runs_dir, name)
        return path.exists() or any(j.active and j.path == path for j in self._jobs.values())

    def _free_name(self, runs_dir: Path, name: str) -> str:
        candidates = (name if n == 1 else f"{name}-{n}" for n in range(1, 1000))
        return next((c for c in candidates if not self._taken(runs_dir, c)), f"{name}-{time.time_ns()}")

    def _forget_old(self) -> None:
        ended = [j.id for j in self._jobs.values() if not j.active]
        for job_id in ended[:max(0, len(ended) - self._keep)]:
            del self._jobs[job_id]


def _mark_failed(path: Path, error: Exception) -> None:
    """A run whose training raised something else than TrainingStopped keeps a card that says running,
    with this (live) process's id: it would show as running for ever. Its card says failed instead."""
    run = RunDir(path)
    try:
        card = run.read_card() if run.card_path.exists() else {}
        if card.get("status") == "running" and card.get("pid") == os.getpid():  # (not another process's run)
            run.write_card(card | {"status": "failed", "reason": f"{type(error).__name__}: {error}"[:500]})
    except (OSError, LabkitError):
        pass


_default: TrainingQueue | None = None
_default_lock = threading.Lock()


def default_queue() -> TrainingQueue:
    """The process's queue (one training at a time per server). When the process exits normally (a
    server stopped with Ctrl-C), the running job is stopped with a checkpoint first."""
    global _default
    with _default_lock:
        if _default is None:
            _default = TrainingQueue()
            atexit.register(_default.shutdown, 60.0)
        return _default
