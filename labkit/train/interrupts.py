"""Stopping a run cleanly: SIGINT (Ctrl-C) and SIGTERM (`kill`, a scheduler) only record that
they came; the Trainer finishes the step, saves a checkpoint and raises `TrainingStopped`."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from labkit.errors import LabkitError


class TrainingStopped(LabkitError):
    """Training ended early: interrupted by a signal (`signal` says which), or the loss stopped
    being finite (`signal` is None)."""

    def __init__(self, message: str, signal: int | None = None):
        super().__init__(message)
        self.signal = signal


class StopSignals:
    """While it is installed, SIGINT and SIGTERM call `received(signum)` instead of stopping the
    process; `restore()` puts the previous handlers back."""

    def __init__(self, received: Callable[[int], Any]):
        self.old: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.old[sig] = signal.signal(sig, lambda signum, frame: received(signum))
            except ValueError:  # not the main thread (a Streamlit session, say): no handlers
                pass

    def restore(self) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
