"""Pretraining as a language model: from configs to a finished run directory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labkit import __version__
from labkit.data.lm import DataConfig, LMData, load_lm_data
from labkit.data.tokenizers import load_tokenizer
from labkit.errors import LabkitError, RunError
from labkit.models import ModelConfig, build_model, config_from_dict
from labkit.runs import RunDir, load_run, writer_lock
from labkit.train import distributed
from labkit.train.callbacks import Callback
from labkit.train.trainer import TrainConfig, Trainer

# Settings that may change when a run is resumed (how long, how often), unlike the model or
# the data, which must match the checkpoint.
RESUMABLE_OVERRIDES = ("max_steps", "time_budget_s", "eval_every", "log_every", "device")


def pretrain(model_config: ModelConfig, train_config: TrainConfig, data_config: DataConfig,
             out: str | Path, *, callbacks: list[Callback] | tuple = (),
             data: LMData | None = None, init_from: str | Path | None = None) -> dict[str, Any]:
    """Train a new run in `out` (which must not hold a run yet) and return its card.

    `init_from` starts from another run's weights and tokenizer (continued pretraining on new
    text: domain adaptation). Under torchrun every process calls this; rank 0 writes the run."""
    dist = distributed.setup()
    run = RunDir(out)
    run.check_new()
    with locked(run, dist):
        if run.exists():
            raise RunError(f"{run.root} already holds a run: pass --resume to continue it, or "
                           "choose another --name")
        tokenizer = None
        if init_from is not None:
            base = load_run(init_from, which="best")
            tokenizer, model_config = base.tokenizer, base.model.config
        if data is None:
            data = load_lm_data(data_config, tokenizer)
        if model_config.vocab_size != data.tokenizer.vocab_size:
            model_config = model_config.replace(vocab_size=data.tokenizer.vocab_size)
        model = new_model(model_config, train_config.seed)
        if init_from is not None:
            model.load_state_dict(base.model.state_dict())
        # Checks the settings first; in a distributed run every rank has checked for an existing
        # run before rank 0 creates this one (making the DDP model is a collective).
        trainer = Trainer(model, data, train_config, run, callbacks)
        error = None
        if dist.is_main:
            try:
                run.create(data.tokenizer, {"kind": "lm", "labkit_version": __version__,
                                            "model": model_config.to_dict(), "train": train_config.to_dict(),
                                            "data": data_config.to_dict(),
                                            "init_from": str(init_from) if init_from else None})
            except RunError as e:
                error = e
        dist.check(error)
        return trainer.fit()


@contextlib.contextmanager
def locked(run: RunDir, dist: distributed.Dist) -> Iterator[None]:
    """Hold the run's writer lock for the block, on rank 0 (the one that writes); every rank stops
    when it is refused (another process writes the run)."""
    with contextlib.ExitStack() as held:
        error = None
        if dist.is_main:
            try:
                held.enter_context(writer_lock(run))
            except RunError as e:
                error = e
        dist.check(error)
        yield


def new_model(config: ModelConfig, seed: int) -> nn.Module:
    """A freshly initialised model: the same weights for the same config and seed, wherever
    it is made (a fresh process, a notebook that has drawn random numbers, a restart)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return build_model(config)
        except (RuntimeError, MemoryError) as e:  # sizes too large for this machine's memory
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise LabkitError(f"cannot build the model with these sizes ({first}); choose "
                              "smaller --d-model, --hidden, --layers or vocabulary") from None


def resume(out: str | Path, *, callbacks: list[Callback] | tuple = (),
           overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Continue a run from its latest checkpoint (optionally longer: `max_steps=...`).

    A run stopped before its first checkpoint starts again from step 0, from its config."""
    dist = distributed.setup()
    run = RunDir(out)
    with locked(run, dist):
        config = run.load_config()
        checkpoint = run.latest_checkpoint()
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        bad = sorted(set(overrides) - set(RESUMABLE_OVERRIDES))
        if bad:
            raise LabkitError(f"cannot change {', '.join(bad)} when resuming; only "
                              f"{', '.join(RESUMABLE_OVERRIDES)} may change")
        try:
            train_config = TrainConfig.from_dict({**config["train"], **overrides})
            model_config = config_from_dict(config["model"])
            data_config = DataConfig.from_dict(config["data"])
        except (KeyError, TypeError) as e:
            raise RunError(f"{run.config_path} is incomplete or damaged ({e!r})") from None
        tokenizer = load_tokenizer(run.tokenizer_path)
        data = load_lm_data(data_config, tokenizer)
        model = new_model(model_config, train_config.seed)
        if checkpoint is None and config.get("init_from"):  # starting over: from the same weights
            model.load_state_dict(load_run(config["init_from"]).model.state_dict())
        trainer = Trainer(model, data, train_config, run, callbacks)
        if checkpoint is not None:
            trainer.resume(checkpoint)
        elif trainer.metrics:  # stopped before its first checkpoint: start over, from step 0
            trainer.metrics.truncate_after(0)
        error = None
        if overrides and trainer.writes:
            try:
                run.save_config({k: v for k, v in config.items() if k != "format_version"}
                                | {"train": train_config.to_dict()})
            except RunError as e:
                error = e
        trainer.dist.check(error)
        return trainer.fit()
