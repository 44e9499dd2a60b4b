"""Speed benchmarks: labkit's training paths against a plain reference (`labkit bench`).

The names below load torch when first used, not on import: `labkit --help` reads
`labkit.bench.names` through this package and must not wait for torch."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BenchConfig", "run", "table", "write_result"]
_HOME = {"BenchConfig": "labkit.bench.variants", "run": "labkit.bench.run", "table": "labkit.bench.report",
         "write_result": "labkit.bench.report"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'labkit.bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # over the submodule of the same name (`run`) that the import just set
    return value
