"""Experiments that train and then look: a fair race between an RNN and a Transformer (same
parameters, same training tokens), and a probe pair (both families on one synthetic probe).

"Which family is better?" has no answer until the budget is fixed. Here it is fixed twice:

- the same parameter count: `matched_rnn` widens or narrows an RNN until its parameter count is
  the closest to a target (a Transformer's, from `parameter_count`);
- the same training tokens, FLOPs or seconds: `compare_budget` trains every configuration through
  labkit's own `pretrain` on one data set (one tokenizer, one training stream) for as many steps as
  it takes to read `tokens` tokens (or to spend `flops` training FLOPs, or `seconds`), then reads
  each run's card and validation curve;
- each family's own recipe on two budgets: `match_budgets` trains every recipe for the same
  training time, then the ones that spent more FLOPs in it again on the thriftiest one's FLOPs.

Per-token compute still differs: `flops_per_token` counts the forward pass of each model (2 FLOPs
per multiply-add), and training costs about 3x that per token (the backward pass is about twice
the forward one). So a comparison reports tokens, FLOPs and wall time; the same tokens can cost
one family twice the FLOPs or the time of the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labkit import demo
from labkit.data.lm import DataConfig, LMData, load_lm_data
from labkit.errors import LabkitError
from labkit.inspect.curves import run_curves
from labkit.models import ModelConfig, RNNConfig, build_model, config_from_dict, count_parameters
from labkit.models.output import train_flops_per_token
from labkit.presets import PRESETS, resolve_preset
from labkit.recorder import TimelineRecorder
from labkit.runs import LoadedRun, RunDir, load_run, run_metrics
from labkit.train.callbacks import Callback, ProgressBar
from labkit.train.pretrain import pretrain
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
                "train_flops": c.get("train_flops", TRAIN_FLOPS_PER_FORWARD * c.get("flops_per_token", 0)
                                     * c.get("tokens_seen", 0)),
                "wall_time_s": c.get("wall_time_s"), "best_val_loss": c.get("best_val_loss"),
                "test_loss": c.get("test_loss")}


def read_budget_run(path: str | Path) -> BudgetRun:
    """A finished run's card and validation curve, with FLOPs spent at each evaluation."""
    run = RunDir(path)
    card = run.read_card()
    records = run_metrics(run.root)
    curve, wall = run_curves(records, "tokens seen").val, run_curves(records, "training time (s)").val
    per_token = (card["train_flops"] / card["tokens_seen"] if card.get("train_flops") and card.get("tokens_seen")
                 else TRAIN_FLOPS_PER_FORWARD * card.get("flops_per_token", 0))  # cards before train_flops
    val = [{"tokens": t, "train_flops": per_token * t, "elapsed_s": s, "val_loss": v}
           for t, s, v in zip(curve.x, wall.x, curve.y)]
    return BudgetRun(run.root.name, run.root, card, val)


def compare_budget(runs: dict[str, tuple[ModelConfig, TrainConfig]], data_config: DataConfig,
                   out: str | Path, tokens: int | None = None, *, flops: float | None = None,
                   seconds: float | None = None, data: LMData | None = None,
                   callbacks: dict[str, list[Callback]] | None = None) -> dict[str, BudgetRun]:
    """Train each configuration (name -> (model config, training config)) into `out/<name>` with
    `labkit.train.pretrain.pretrain`, on the same data (`data`, else loaded once from `data_config`),
    each on one budget: `tokens` training tokens, `flops` training FLOPs (each model reads the
    tokens that cost it that much: `labkit.models.output.train_flops_per_token` on the training
    stream), or `seconds` of training time. Return their results by name. The vocabulary size of
    each model config is set from the data."""
    budgets = [b for b in (tokens, flops, seconds) if b is not None]
    if len(budgets) != 1:
        raise LabkitError("give exactly one budget: tokens, flops or seconds")
    if budgets[0] <= 0:
        raise LabkitError("the budget must be positive")
    data = data if data is not None else load_lm_data(data_config)
    results = {}
    for name, (model_config, train_config) in runs.items():
        model_config = model_config.replace(vocab_size=data.tokenizer.vocab_size)
        if seconds is not None:
            train = train_config.replace(max_steps=10**9, time_budget_s=seconds)
        else:
            needed = tokens if tokens is not None else math.ceil(flops / model_train_flops(
                model_config, train_config.seq_len, data.train))
            train = train_config.replace(max_steps=steps_for(train_config, needed), time_budget_s=None)
        path = Path(out) / name
        pretrain(model_config, train, data_config, path, data=data, callbacks=(callbacks or {}).get(name, ()))
        results[name] = read_budget_run(path)
    return results


def match_budgets(runs: dict[str, tuple[ModelConfig, TrainConfig]], data_config: DataConfig,
                  out: str | Path | Callable[[str, str], Path], seconds: float, *, data: LMData | None = None,
                  callbacks: Callable[[str, str], list[Callback]] | None = None) -> dict[str, dict[str, BudgetRun]]:
    """Each recipe (name -> (model config, training config)) on two budgets, on the same data.
    "time": `seconds` of training time each; "flops": the training FLOPs of the recipe that spent
    the fewest in that time, so that one's time run is also its FLOPs run and every other recipe
    trains again on that many FLOPs (reading the tokens that cost it that much, its schedule fitted
    to those steps). Runs go to `out/<budget>/<name>`, or to `out(budget, name)`;
    `callbacks(budget, name)` gives a run's callbacks. Returns {"time": {name: run}, "flops": ...}."""
    data = data if data is not None else load_lm_data(data_config)
    where = out if callable(out) else (lambda budget, name: Path(out) / budget / name)
    hooks = callbacks or (lambda budget, name: [])

    def train(budget: str, names: list[str], **amount: float) -> dict[str, BudgetRun]:
        done = {}
        for name in names:
            path = Path(where(budget, name))
            done[name] = compare_budget({path.name: runs[name]}, data_config, path.parent, data=data,
                                        callbacks={path.name: hooks(budget, name)}, **amount)[path.name]
        return done

    wall = train("time", list(runs), seconds=seconds)
    spent = {name: run.card["train_flops"] for name, run in wall.items()}
    thriftiest = min(spent, key=spent.get)
    again = train("flops", [name for name in runs if name != thriftiest], flops=spent[thriftiest])
    return {"time": wall, "flops": {name: again.get(name, wall[name]) for name in runs}}


def model_train_flops(config: ModelConfig, seq_len: int, targets: torch.Tensor | None = None) -> float:
    """Training FLOPs per token of `config`'s model (built on the meta device: shapes only)."""
    with torch.device("meta"):
        return train_flops_per_token(build_model(config), seq_len, targets)


# --- both families on one synthetic probe ---------------------------------------------------
# Training tokens per task and test items per distance or length, by notebook profile. smoke:
# four steps, numbers that mean nothing; cpu: about five minutes for the four runs (the copy
# task is learned only in part); gpu: the sizes of benchmarks/probes.py.
PROBE_SIZES: dict[str, dict[str, int]] = {
    "smoke": dict(agreement=32 * 64 * 4, copy=32 * 64 * 4, items=6),
    # agreement is learnt by 4M tokens; the Transformer learns to copy late and suddenly (between 6M
    # and 10M tokens of a 16M-token run, docs/results.md): cpu stops before that, gpu after it
    "cpu": dict(agreement=4_000_000, copy=3_000_000, items=100),
    "gpu": dict(agreement=4_000_000, copy=16_000_000, items=200),
}
PROBE_CORPORA = {"agreement": "synthetic-agreement", "copy": "synthetic-copy"}
# The same settings for both families; 64-token windows hold a whole copy line (up to 41 tokens).
PROBE_TRAIN = dict(lr=1e-3, batch_size=32, seq_len=64, warmup_steps=50, log_every=10, precision="fp32")


@dataclass
class ProbePair:
    task: str  # "agreement" or "copy"
    runs: dict[str, LoadedRun]  # "lstm", "transformer" -> model and tokenizer
    budget: dict[str, BudgetRun]  # the same -> card and validation curve


def probe_pair(task: str, tokens: int, runs_root: str | Path, names: dict[str, str], *, device: str = "cpu",
               eval_tokens: int | None = None, progress: bool = True) -> ProbePair:
    """Train the tiny Transformer and an LSTM of the same parameter count (`matched_rnn`) on the
    same `tokens` tokens of the `task` probe ("agreement" or "copy") with `compare_budget`, into
    `runs_root/<names[family]>` (family: "lstm", "transformer")."""
    if task not in PROBE_CORPORA:
        raise LabkitError(f"task must be one of {', '.join(PROBE_CORPORA)}, got {task!r}")
    data_config = DataConfig(corpus=PROBE_CORPORA[task], eval_tokens=eval_tokens)
    data = load_lm_data(data_config)
    vocab = data.tokenizer.vocab_size
    transformer = config_from_dict(resolve_preset("tiny", "transformer")["model"] | {"vocab_size": vocab})
    lstm = matched_rnn(config_from_dict(resolve_preset("tiny", "lstm")["model"]), parameter_count(transformer), vocab)
    train = TrainConfig.from_dict(PROBE_TRAIN | {"device": device})
    steps = steps_for(train, tokens)
    train = train.replace(eval_every=max(1, steps // 4), warmup_steps=min(train.warmup_steps, steps // 5))
    callbacks = {name: [TimelineRecorder(), *([ProgressBar(steps, desc=f"{task}: {family}")] if progress else [])]
                 for family, name in names.items()}  # the timeline: the probe scores at each evaluation
    budget = compare_budget({names["lstm"]: (lstm, train), names["transformer"]: (transformer, train)}, data_config,
                            runs_root, tokens, data=data, callbacks=callbacks)
    return ProbePair(task, {family: load_run(budget[name].path, device=device) for family, name in names.items()},
                     {family: budget[name] for family, name in names.items()})


# --- the app's demo models ---------------------------------------------------------------------
# The demo's fine-tuning stages (docs/results.md, "The demo models"): no language-model step (its
# seconds go to labelled sentences instead), concat pooling, a cosine decay over the stage's steps
# (labkit.demo), batches of 64 drawn from all of the task's training sentences (12,800 of SST-2's
# 65,000 in 200 steps: less than one epoch).
DEMO_FINETUNE = dict(
    sst2=dict(train_size=None, epochs=1, lm_steps=0, schedule="cosine", warmup_frac=0.05, batch_size=64,
              lr_body=1e-3, lr_head=2e-3),
    number=dict(train_size=4000, epochs=3, lm_steps=0, schedule="cosine", warmup_frac=0.05),
)


def train_demo_models(root: str | Path, *, steps: int | None = None, corpus: str | None = None,
                      names: dict[str, str] | None = None, callbacks: list[Callback] | tuple = (),
                      status: bool = False, precision: str = "auto") -> dict[str, dict[str, Any]]:
    """Train the demo models (labkit.demo) into `root`, one stage after the other: an LSTM and a
    Transformer language model, each fine-tuned on the demo task, then the LSTM's network on the task
    from scratch; returns their cards by run name. Every stage stops at its steps (`steps` replaces
    them all), never at a time. `status`: report each stage's phase in the demo's status file.
    `precision`: "auto" (bf16 where the CPU has it), or "fp32" (what a CPU without bf16 runs)."""
    from labkit.train.finetune import FinetuneConfig, finetune

    corpus = corpus or demo.demo_corpus()
    task = demo.demo_task(corpus)
    names = names or demo.demo_names(root, task)
    plan = demo.demo_plan(names, corpus, task, steps)
    first = PRESETS[demo.demo_preset(corpus, "lstm")]
    # The tiny presets' data settings with all the training text; the demo presets' own (all of it).
    data_config = DataConfig(corpus=corpus, **(first["data"] | {"train_tokens": None}))
    data = load_lm_data(data_config)  # both presets share the data settings: load once
    cards = {}
    for stage in plan:
        hooks = [*callbacks, *([demo.StatusFile(root, stage.run)] if status else [])]
        out = Path(root) / stage.run
        if stage.kind == "lm":
            preset = PRESETS[demo.demo_preset(corpus, stage.family)]
            train = TrainConfig.from_dict({**preset["train"], "max_steps": stage.steps, "time_budget_s": None,
                                           "eval_every_s": None, "eval_every": max(1, stage.steps // 10),
                                           "device": "cpu", "precision": precision})
            model = config_from_dict({**preset["model"], "vocab_size": data.tokenizer.vocab_size})
            cards[stage.run] = pretrain(model, train, data_config, out, data=data, callbacks=[*hooks, TimelineRecorder()])
        else:
            config = FinetuneConfig(task=task, **DEMO_FINETUNE[task], max_steps=stage.steps,
                                    eval_every=max(1, stage.steps // 5), from_scratch=stage.kind == "scratch",
                                    device="cpu", precision=precision)
            cards[stage.run] = finetune(Path(root) / stage.base, config, out, callbacks=hooks)
    return cards
