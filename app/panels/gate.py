"""The server's compute gate: `slots` computations at a time (its cores over torch's threads per
computation), the rest waiting first come first served; a page that has to wait shows its place
in the line (`computing`). Only the computing waits, never a page: cached results, figures and
text are served at once."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import streamlit as st


class Gate:
    """`slots` computations at a time, the rest waiting in the order they came: a request's place
    in the line is what a waiting page shows. (Not a lock around a page: only the computing waits;
    cached results, figures and text do not.)"""

    def __init__(self, slots: int):
        self.slots = max(1, slots)
        self.running = 0
        self.line: list[object] = []  # waiting requests, first come first
        self.cond = threading.Condition()

    @contextlib.contextmanager
    def slot(self, waiting: Callable[[int], None] = lambda ahead: None) -> Iterator[None]:
        """Within the block, one of the slots. While there is none, `waiting(requests ahead)` is
        called (outside the gate's lock) each time that number changes, and `waiting(-1)` once the
        wait is over (clear the message)."""
        me = object()
        shown = None
        with self.cond:
            self.line.append(me)
        try:
            while True:
                with self.cond:
                    ahead = self.line.index(me) + max(0, self.running - self.slots + 1)
                    if self.running < self.slots and self.line[0] is me:
                        self.line.pop(0)
                        self.running += 1
                        break
                if ahead != shown:
                    waiting(ahead)
                    shown = ahead
                with self.cond:
                    self.cond.wait(timeout=0.25)
        except BaseException:  # the page was left (a rerun, a stop): out of the line
            with self.cond:
                if me in self.line:
                    self.line.remove(me)
                self.cond.notify_all()
            raise
        if shown is not None:
            waiting(-1)
        try:
            yield
        finally:
            with self.cond:
                self.running -= 1
                self.cond.notify_all()


def slots_here() -> int:
    """How many computations the server runs at once: its cores over torch's threads per
    computation (LABKIT_APP_SLOTS overrides); `labkit app --class` gives each one thread."""
    if os.environ.get("LABKIT_APP_SLOTS", "").isdigit():
        return int(os.environ["LABKIT_APP_SLOTS"])
    import torch

    return max(1, (os.cpu_count() or 1) // max(1, torch.get_num_threads()))


GATE = Gate(slots_here())


@contextlib.contextmanager
def computing(note: Any = None) -> Iterator[None]:
    """A slot of the server for a computation, with the session's place in the line on the page
    while it waits (in `note`, an st.empty() placeholder, or a new one), and nothing left on the
    page after. A loop of many small computations (Generate's tokens) passes one placeholder."""
    note = note if note is not None else st.empty()

    def waiting(ahead: int) -> None:
        if ahead < 0:
            note.empty()
        else:
            note.info(f"Waiting for the server: {ahead} request{'s' if ahead != 1 else ''} ahead of yours.",
                      icon=":material/hourglass_top:")

    with GATE.slot(waiting):
        yield
