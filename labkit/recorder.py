"""The timeline recorder: a Trainer callback that appends a small snapshot of the model to its run
at each evaluation (labkit.inspect.timeline says what a snapshot holds; labkit.runs.timeline is the
file), so that the app can show a run learning, live while it trains.

It lives above the trainer (which never imports labkit.inspect) and is attached by whatever starts
pretraining: `labkit pretrain` (new runs and --resume), the demo models, the notebooks' runs.
A run without a run directory, a process other than rank 0, or a run with nothing to record (an
RNN on real text) records nothing and writes no file.

A failed write (a full disk) stops the recording with a note, not the training: the timeline is
a view, the metrics and checkpoints are what the run needs. On resume, its first event drops the
snapshots at or after the step training continues from, which the run is about to take again:
the timeline then reads as one uninterrupted run's.
"""

from __future__ import annotations

import sys
from typing import Any

from labkit.errors import LabkitError
from labkit.inspect.timeline import PROBES, choose_sentence, measure
from labkit.runs.timeline import TimelineWriter, read_timeline_records


class TimelineRecorder:
    """Trainer callback (on_step, on_eval): one timeline snapshot per evaluation."""

    def __init__(self) -> None:
        self.writer: TimelineWriter | None = None
        self.sentence: list[int] = []
        self.corpus = ""
        self._started = False

    def _start(self, trainer: Any) -> None:
        """Once, at the first event: what to record, and the file cut back to before this step."""
        self._started = True
        run, model = trainer.run, trainer.model
        if run is None or not trainer.dist.is_main:
            return
        data = getattr(trainer.objective, "data", None)
        self.corpus = str((run.load_config().get("data") or {}).get("corpus", ""))
        transformer = getattr(model.config, "family", None) == "transformer"
        if data is None or not (transformer or self.corpus in PROBES):
            return
        self.writer = TimelineWriter(run)
        self.writer.drop_from(trainer.step)
        header = next((r for r in reversed(read_timeline_records(run)) if r.get("kind") == "sentence"), None)
        tokenizer = data.tokenizer
        ids = header.get("ids") if header is not None else None
        if isinstance(ids, list) and ids and all(isinstance(i, int) and not isinstance(i, bool)
                                                 and 0 <= i < tokenizer.vocab_size for i in ids):
            self.sentence = list(ids)
            return
        if header is not None:  # damaged: the snapshots that follow are of a new sentence
            print("note: the timeline's sentence was damaged; its snapshots from here read a new one",
                  file=sys.stderr, flush=True)
        self.sentence = choose_sentence(data.valid, tokenizer.eos_id, getattr(model.config, "context_length", None))
        self.writer.write({"kind": "sentence", "ids": self.sentence,
                           "tokens": [str(t) for t in tokenizer.id_to_token(self.sentence)]})

    def on_step(self, trainer: Any, record: dict[str, Any]) -> None:
        if not self._started:
            self._start(trainer)

    def on_eval(self, trainer: Any, record: dict[str, Any]) -> None:
        if not self._started:
            self._start(trainer)
        if self.writer is None:
            return
        snapshot = measure(trainer.model, trainer.objective.data.tokenizer, self.sentence, self.corpus)
        try:
            self.writer.write({"kind": "snapshot", "step": trainer.step, "tokens_seen": trainer.tokens_seen,
                               "val_loss": record.get("val_loss"), **snapshot})
        except LabkitError as e:
            print(f"note: the timeline stops here: {e}", file=sys.stderr, flush=True)
            self.writer = None
