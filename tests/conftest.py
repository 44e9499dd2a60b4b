"""Shared fixtures. Unit tests load no data; integration tests read the real corpora from
``$LABKIT_DATA`` (e.g. ``LABKIT_DATA=../shared/data pytest``) and skip when it is unset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
