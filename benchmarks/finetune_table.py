"""Summarise fine-tuning runs as a markdown table: accuracy on SST-2 dev, mean +- std over seeds.

    python benchmarks/finetune_table.py RUNS_DIR
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

from labkit.runs import list_runs


def main(root: str) -> int:
    groups: dict[tuple, list[float]] = defaultdict(list)
    for info in list_runs(root):
        if info.error or (info.card or {}).get("status") != "finished" or info.config.get("kind") != "classifier":
            continue
        card, config = info.card, info.config
        body = config["model"]["body"]
        family = body.get("cell", body["family"])
        condition = "scratch" if card["from_scratch"] else f"pretrained, {card['mode']}"
        groups[(Path(card["base_run"]).name, family, card["train_size"], condition)].append(card["accuracy"])
    print("| base run | model | labelled sentences | condition | SST-2 dev accuracy | runs |")
    print("| --- | --- | ---: | --- | ---: | ---: |")
    for (base, family, n, condition), accs in sorted(groups.items()):
        spread = f" ± {statistics.stdev(accs) * 100:.1f}" if len(accs) > 1 else ""
        print(f"| {base} | {family} | {n:,} | {condition} | {statistics.mean(accs) * 100:.1f}{spread} | {len(accs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs"))
