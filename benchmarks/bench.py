"""`labkit bench` as a script: python benchmarks/bench.py [the same options as labkit bench].

    LABKIT_DATA=../shared/data python benchmarks/bench.py --budget 150 --threads 1 --out runs/bench.json
"""

import sys

from labkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
