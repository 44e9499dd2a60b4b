"""Speed benchmarks: labkit's training paths against a plain reference (`labkit bench`).

Importing this package loads torch; `labkit.bench.names` does not."""

from labkit.bench.report import table, write_result
from labkit.bench.run import run
from labkit.bench.variants import BenchConfig

__all__ = ["BenchConfig", "run", "table", "write_result"]
