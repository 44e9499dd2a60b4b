"""Fixtures shared by the app tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import appruns

APP_DIR = Path(__file__).resolve().parents[2] / "app"


@pytest.fixture(scope="module")
def common():
    """The app's own `common` module, imported the way its pages import it."""
    sys.path.insert(0, str(APP_DIR))
    try:
        import common

        yield common
    finally:
        sys.path.remove(str(APP_DIR))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The app tests' runs folder (tests/appruns.py), made once per test file that asks for it."""
    return appruns.runs_root(tmp_path_factory)


@pytest.fixture
def no_runs_env(monkeypatch):
    """No LABKIT_RUNS from the environment: the pages read the folder the test gives them."""
    monkeypatch.delenv("LABKIT_RUNS", raising=False)
