"""Speed benchmarks: labkit's training paths against a plain reference (`labkit bench`).

Modules: reference (the plain way to train, the yardstick), variants (the settings and the ways
of training compared), measure (the machine and every measurement), run (the run and its report).
This package's names load torch when first used, not on import: `labkit --help` reads the
accepted names below and must not wait for torch."""

from __future__ import annotations

import importlib
from typing import Any

SIZES = ("tiny", "classic", "medium")
FAMILIES = ("lstm", "transformer")
VARIANTS = ("reference", "fp32", "default", "adaptive", "fastest", "compile")

__all__ = ["FAMILIES", "SIZES", "VARIANTS", "BenchConfig", "run", "table", "write_result"]
_HOME = {"BenchConfig": "labkit.bench.variants", "run": "labkit.bench.run", "table": "labkit.bench.run",
         "write_result": "labkit.bench.run"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'labkit.bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # over the submodule of the same name (`run`) that the import just set
    return value
