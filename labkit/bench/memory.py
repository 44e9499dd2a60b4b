"""The child process of `labkit bench`'s memory measurement (see run.measure_memory)."""

from __future__ import annotations

import json
import sys

from labkit.bench.measure import probe_memory
from labkit.bench.variants import BenchConfig


def main(argv: list[str]) -> None:
    request = json.loads(argv[0])
    config = request["config"]
    for key in ("families", "variants", "budget_variants"):
        config[key] = tuple(config[key])
    print(json.dumps(probe_memory(BenchConfig(**config), request["family"], request["name"])))


if __name__ == "__main__":
    main(sys.argv[1:])
