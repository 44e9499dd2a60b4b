"""Speed benchmarks: labkit's training paths against a plain reference (`labkit bench`).

Importing this package loads torch; `labkit.bench.names` does not."""

from labkit.bench.run import BenchConfig, run, table, write_result

__all__ = ["BenchConfig", "run", "table", "write_result"]
