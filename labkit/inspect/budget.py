"""A fair race between an RNN and a Transformer: same parameters, same training tokens.

"Which family is better?" has no answer until the budget is fixed. Here it is fixed twice:

- the same parameter count: `matched_rnn` widens or narrows an RNN until its parameter count is
  the closest to a target (a Transformer's, from `parameter_count`);
- the same training tokens: `compare_budget` trains every configuration through labkit's own
  `pretrain` on one data set (one tokenizer, one training stream) for as many steps as it takes to
  read `tokens` tokens, then reads each run's card and validation curve.

Per-token compute still differs: `flops_per_token` counts the forward pass of each model (2 FLOPs
per multiply-add), and training costs about 3x that per token (the backward pass is about twice
the forward one). So a comparison reports tokens, FLOPs and wall time; the same tokens can cost
one family twice the FLOPs or the time of the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labkit.data.lm import DataConfig, LMData, load_lm_data
from labkit.errors import LabkitError
from labkit.inspect.curves import run_curves
from labkit.models import ModelConfig, RNNConfig, build_model, count_parameters
from labkit.rundir import RunDir
from labkit.train.callbacks import Callback
from labkit.train.metrics import read_metrics
from labkit.train.trainer import TrainConfig

TRAIN_FLOPS_PER_FORWARD = 3  # forward + backward, per token


def parameter_count(config: ModelConfig) -> int:
    """The exact parameter count of `config`'s model, built on the meta device (shapes only: no
    memory, no initialisation cost)."""
    with torch.device("meta"):
        return count_parameters(build_model(config))


def matched_rnn(base: RNNConfig, target: int, vocab_size: int) -> RNNConfig:
    """`base` with the width (d_embed = d_hidden when tied, else d_hidden) whose parameter count
    is closest to `target`."""
    def sized(width: int) -> RNNConfig:
        return base.replace(d_hidden=width, vocab_size=vocab_size, **({"d_embed": width} if base.tie_weights else {}))

    lo, hi = 4, 8192
    while hi - lo > 1:  # the count grows with the width
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if parameter_count(sized(mid)) < target else (lo, mid)
    return sized(min((lo, hi), key=lambda w: abs(parameter_count(sized(w)) - target)))


def steps_for(train: TrainConfig, tokens: int) -> int:
    """Optimizer steps that read at least `tokens` training tokens."""
    return max(1, math.ceil(tokens / (train.batch_size * train.seq_len * train.grad_accum)))


@dataclass
class BudgetRun:
    name: str
    path: Path
    card: dict[str, Any]  # the run's results card (parameters, tokens_seen, flops_per_token, ...)
    val: list[dict[str, float]]  # per evaluation: tokens, train_flops, elapsed_s, val_loss

    def row(self) -> dict[str, Any]:
        """One row of a comparison table."""
        c = self.card
        return {"run": self.name, "family": c.get("family"), "parameters": c.get("parameters"),
                "steps": c.get("steps"), "tokens": c.get("tokens_seen"), "flops_per_token": c.get("flops_per_token"),
                "train_flops": TRAIN_FLOPS_PER_FORWARD * c.get("flops_per_token", 0) * c.get("tokens_seen", 0),
                "wall_time_s": c.get("wall_time_s"), "best_val_loss": c.get("best_val_loss"),
                "test_loss": c.get("test_loss")}


def read_budget_run(path: str | Path) -> BudgetRun:
    """A finished run's card and validation curve, with FLOPs spent at each evaluation."""
    run = RunDir(path)
    card = run.read_card()
    records = read_metrics(run.metrics_path)
    curve, wall = run_curves(records, "tokens seen").val, run_curves(records, "wall time (s)").val
    per_token = TRAIN_FLOPS_PER_FORWARD * card.get("flops_per_token", 0)
    val = [{"tokens": t, "train_flops": per_token * t, "elapsed_s": s, "val_loss": v}
           for t, s, v in zip(curve.x, wall.x, curve.y)]
    return BudgetRun(run.root.name, run.root, card, val)


def compare_budget(runs: dict[str, tuple[ModelConfig, TrainConfig]], data_config: DataConfig,
                   out: str | Path, tokens: int, *, data: LMData | None = None,
                   callbacks: dict[str, list[Callback]] | None = None) -> dict[str, BudgetRun]:
    """Train each configuration (name -> (model config, training config)) into `out/<name>` with
    `labkit.pretrain.pretrain`, on the same data (`data`, else loaded once from `data_config`),
    each for the steps that read `tokens` training tokens; return their results by name.
    The vocabulary size of each model config is set from the data."""
    from labkit.pretrain import pretrain  # labkit.pretrain imports the trainer: only when training

    if tokens < 1:
        raise LabkitError("tokens must be at least 1")
    data = data if data is not None else load_lm_data(data_config)
    results = {}
    for name, (model_config, train_config) in runs.items():
        train = train_config.replace(max_steps=steps_for(train_config, tokens), time_budget_s=None)
        path = Path(out) / name
        pretrain(model_config.replace(vocab_size=data.tokenizer.vocab_size), train, data_config, path,
                 data=data, callbacks=(callbacks or {}).get(name, ()))
        results[name] = read_budget_run(path)
    return results
