"""Fixtures shared by the app tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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
