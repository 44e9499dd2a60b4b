"""`labkit bench`'s settings and the variants it compares: one way of training one model each,
stepped in turn on its own clock (see labkit.bench.run for what each variant is)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from labkit.bench import FAMILIES, SIZES, VARIANTS
from labkit.bench.reference import ReferenceTrainer, build_reference, load_labkit_weights
from labkit.data.lm import DataConfig, LMData, load_lm_data
from labkit.device import pick_device, sync
from labkit.errors import LabkitError
from labkit.models import build_model, config_from_dict, count_parameters
from labkit.presets import resolve_preset
from labkit.train.schedule import PlateauDivider, scheduled_lr
from labkit.train.trainer import TrainConfig, Trainer

PROMPT = "the history of the city begins in the"


@dataclass
class BenchConfig:
    size: str = "classic"
    families: tuple[str, ...] = FAMILIES
    variants: tuple[str, ...] = ("reference", "fp32", "default", "adaptive", "fastest")
    budget_variants: tuple[str, ...] = ("reference", "default", "fastest")  # trained for budget_s each
    budget_s: float = 120.0  # training time per variant for the perplexity comparison
    windows: int = 7  # timed windows per variant for tokens/s
    window_s: float = 2.0  # about this long each
    evals: int = 10  # validation points along each budget
    eval_tokens: int = 20_000
    gen_tokens: int = 512
    threads: int | None = None
    device: str = "auto"
    corpus: str | None = None  # default: wikitext-2, or synthetic for the tiny size
    data_dir: str | None = None
    train_tokens: int = 0  # 0: all
    target_ppl: float | None = None  # also report the time each variant needs to reach this
    seed: int = 1234
    progress: bool = True

    def check(self) -> None:
        if self.size not in SIZES:
            raise LabkitError(f"unknown size {self.size!r}; use one of {', '.join(SIZES)}")
        for name, values, allowed in (("family", self.families, FAMILIES), ("variant", self.variants, VARIANTS),
                                      ("variant", self.budget_variants, VARIANTS)):
            bad = [v for v in values if v not in allowed]
            if bad or (not values and name == "family"):
                raise LabkitError(f"unknown {name} {', '.join(bad) or '(none)'}; use {', '.join(allowed)}")
        for name in ("budget_s", "window_s"):
            if not 0 < getattr(self, name) < math.inf:
                raise LabkitError(f"{name} must be a positive number of seconds")
        for name in ("windows", "evals", "eval_tokens"):
            if getattr(self, name) < 1:
                raise LabkitError(f"{name} must be at least 1")
        if self.target_ppl is not None and not 1 < self.target_ppl < math.inf:  # (NaN fails too)
            raise LabkitError(f"target_ppl must be a perplexity above 1, got {self.target_ppl}")
        if self.gen_tokens < 0 or self.train_tokens < 0 or (self.threads is not None and self.threads < 1):
            raise LabkitError("gen_tokens and train_tokens must be >= 0, threads >= 1")


def say(config: BenchConfig, text: str) -> None:
    if config.progress:
        print(text, flush=True)


# --- the variants ------------------------------------------------------------------------
@dataclass
class Recipe:
    family: str
    model: dict[str, Any]
    train: dict[str, Any]


def recipe_for(size: str, family: str) -> Recipe:
    preset = resolve_preset(f"{size}-{family}")
    return Recipe("rnn" if family == "lstm" else "transformer", preset["model"], preset["train"])


class Variant:
    """One way of training one model: `step()` runs one optimizer step at the learning rate
    the shared schedule gives for this variant's own step count and clock."""

    def __init__(self, name: str, recipe: Recipe, data: LMData, vocab_size: int, config: BenchConfig,
                 budget_s: float):
        self.name, self.recipe, self.config = name, recipe, config
        self.budget_s = budget_s
        model_cfg = dict(recipe.model, vocab_size=vocab_size)
        if name in ("adaptive", "fastest"):
            model_cfg |= {"output": "adaptive", "tie_weights": False}
        if name == "fastest":
            model_cfg["dropout"] = 0.0
        self.model_config = config_from_dict(model_cfg)
        t = recipe.train
        self.train_cfg = TrainConfig(**{**t, "max_steps": 10**9, "time_budget_s": budget_s, "eval_every": 10**9,
                                        "device": config.device, "seed": config.seed,
                                        "warmup_steps": min(t.get("warmup_steps", 0), 50),
                                        "precision": "fp32" if name == "fp32" else "auto",
                                        "compile": name == "compile"})
        torch.manual_seed(config.seed)
        model = build_model(self.model_config)  # the same initial weights for every variant
        self.device = pick_device(config.device)
        self.steps, self.elapsed = 0, 0.0
        if name == "reference":
            ref = build_reference(self.model_config)
            load_labkit_weights(ref, model)
            self.model = ref.to(self.device)
            self.trainer: Any = ReferenceTrainer(self.model, data.train.to(self.device),
                                                 self.train_cfg.to_dict(), recipe.family)
            self.precision = "fp32"
        else:
            self.trainer = Trainer(model, data, self.train_cfg)
            self.model = self.trainer.model
            self.precision = self.trainer.precision
        self.tokens_per_step = t["batch_size"] * t["seq_len"]

    @property
    def parameters(self) -> int:
        return count_parameters(self.model)

    def step(self) -> float:
        """One timed optimizer step; returns its seconds."""
        sync(self.device)
        start = time.perf_counter()
        if isinstance(self.trainer, ReferenceTrainer):  # the trainer's schedule, on this clock
            c = self.train_cfg
            plateau = PlateauDivider(c.lr) if c.schedule == "plateau" else None  # never divides: no evals
            self.trainer.step(scheduled_lr(c, self.steps, self.elapsed, plateau))
        else:
            self.trainer.elapsed = self.elapsed  # the trainer's schedule reads its clock
            self.trainer.train_step()
        sync(self.device)
        seconds = time.perf_counter() - start
        self.steps += 1
        self.elapsed += seconds
        return seconds

    def val_loss(self, stream: torch.Tensor) -> float:
        if isinstance(self.trainer, ReferenceTrainer):
            return self.trainer.evaluate(stream.to(self.device), self.train_cfg.eval_batch_size)
        return self.trainer.evaluate("valid")["loss"]  # LMData.valid is this stream (eval_tokens)

    def training_flops_per_token(self) -> int | None:
        """fwd + bwd = 3x the forward's matrix FLOPs; None for the adaptive softmax, whose cost
        depends on which words come (the figure would not compare)."""
        if getattr(self.model_config, "output", "softmax") != "softmax":
            return None
        return 3 * build_model_meta(self.model_config).flops_per_token(self.train_cfg.seq_len)


def build_model_meta(config: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(config)


def load_data(config: BenchConfig) -> tuple[LMData, Any]:
    corpus = config.corpus or ("synthetic" if config.size == "tiny" else "wikitext-2")
    data = load_lm_data(DataConfig(corpus=corpus, data_dir=config.data_dir, train_tokens=config.train_tokens or None,
                                   eval_tokens=config.eval_tokens))
    return data, data.tokenizer
