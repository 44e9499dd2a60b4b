"""What the training timeline costs: the recorder's share of a run's training time.

    python benchmarks/timeline_cost.py [--preset tiny-transformer] [--steps 100]

Trains the preset on the synthetic corpus with the timeline recorder (labkit.recorder) timed
at each evaluation, and prints the seconds it spent against the run's training time. Run it
alone: the share is a timing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from labkit.data.lm import DataConfig, load_lm_data
from labkit.models import config_from_dict
from labkit.presets import PRESETS
from labkit.recorder import TimelineRecorder
from labkit.train.pretrain import pretrain
from labkit.train.settings import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny-transformer", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    spent: list[float] = []

    class Timed(TimelineRecorder):
        def on_eval(self, trainer, record):
            start = time.perf_counter()
            super().on_eval(trainer, record)
            spent.append(time.perf_counter() - start)

    preset = PRESETS[args.preset]
    config = DataConfig(corpus="synthetic", **preset["data"])
    data = load_lm_data(config)
    train = TrainConfig.from_dict({**preset["train"], "max_steps": args.steps, "device": "cpu"})
    with tempfile.TemporaryDirectory() as tmp:
        card = pretrain(config_from_dict({**preset["model"], "vocab_size": data.tokenizer.vocab_size}), train,
                        config, Path(tmp) / "run", data=data, callbacks=[Timed()])
    print(f"timeline recorder: {sum(spent):.3f} s over {len(spent)} evaluations, "
          f"{sum(spent) / card['wall_time_s']:.1%} of {card['wall_time_s']:.1f} s of training "
          f"({args.preset}, {args.steps} steps, eval every {train.eval_every} steps; "
          f"load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
