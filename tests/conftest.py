"""Shared fixtures. Unit tests load no data; integration tests read the real corpora from
``$LABKIT_DATA`` (e.g. ``LABKIT_DATA=../shared/data pytest``) and skip when it is unset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject's addopts): one worker per core, at most 4: most tests run single-threaded
    code or single-threaded subprocesses, so a 2-core machine runs two at once."""
    return min(cores(), 4)


# Files whose tests take minutes are handed to the workers first (each file stays whole, in order, in
# one worker: --dist loadfile), so that no worker is left running one of them alone at the end.
FIRST = ("tests/notebooks/", "tests/crash/", "tests/browser/")


def pytest_collection_modifyitems(config, items) -> None:
    def rank(item) -> int:
        return next((i for i, prefix in enumerate(FIRST) if item.nodeid.startswith(prefix)), len(FIRST))

    items.sort(key=rank)  # stable: every other file keeps its place and each file its order


def pytest_configure(config) -> None:
    """In each worker, torch and the processes a test starts share the cores among the workers
    (threads = cores // workers), so workers never oversubscribe the machine; a test that sets its
    own OMP_NUM_THREADS keeps it."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        threads = max(1, cores() // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def labkit_data() -> Path:
    """The real data directory from ``$LABKIT_DATA``; skips the test when it is not set."""
    value = os.environ.get("LABKIT_DATA")
    if not value:
        pytest.skip("LABKIT_DATA is not set: point it at the data directory (e.g. ../shared/data)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"LABKIT_DATA={value} is not a directory")
    return path
