"""Fine-tuning a pretrained language model on a classification task (SST-2 sentiment), through
the same Trainer as pretraining: resume with the same losses, signals, crash safety, metrics,
callbacks and data-parallel training come with it.

The comparison this module exists for is one flag apart: the same network, with the weights
it learned as a language model (`from_scratch=False`) or with random ones (`from_scratch=True`),
trained on the same labelled sentences for the same budget.

Modes: `full` (every weight trains; the body at `lr_body`, the new head at `lr_head`),
`frozen` (the body is a fixed feature extractor; only the head trains), `gradual` (ULMFiT:
the head alone first, then one more layer group from the top each epoch).

Model selection uses a validation split held out from the task's training sentences; the test
set (SST-2 dev, whose labels GLUE publishes) is read once, at the end, with the best weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labkit import __version__
from labkit.config import JSONConfig
from labkit.data.tasks import TASKS, UNLABELLED, TaskData
from labkit.data.tokenizers import load_tokenizer
from labkit.errors import LabkitError, RunError
from labkit.models import FAMILIES, ClassifierConfig, SequenceClassifier
from labkit.models.grow import grown_config
from labkit.runs import RunDir, load_run
from labkit.train import distributed
from labkit.train.adapt import (  # noqa: F401 (lm_steps, encoded_task, lm_stage: for callers of this module)
    LMStage,
    adapt,
    body_to_train,
    encoded_task,
    grown_words,
    lm_stage,
    lm_steps,
    task_tokenizer,
    unknown_rate,
)
from labkit.train.bow import fit_bow
from labkit.train.callbacks import Callback
from labkit.train.classification import Classification
from labkit.train.pretrain import locked
from labkit.train.settings import TrainConfig
from labkit.train.trainer import Trainer

MODES = Classification.MODES
MAX_VAL_SIZE = 50_000  # held-out sentences for model selection: more is a typo (SST-2 has 67,349 in all)
# What may change when a fine-tuning run is resumed (how long, how often, where).
LM_TEXTS = ("labelled", "all", "all+unsup")  # what the language-model step reads (FinetuneConfig.lm_text)
RESUMABLE_OVERRIDES = ("epochs", "max_steps", "eval_every", "log_every", "patience", "device")


@dataclass
class FinetuneConfig(JSONConfig):
    task: str = "sst2"
    mode: str = "full"
    from_scratch: bool = False
    # The defaults are the recipe docs/results.md measured ("Fine-tuning on SST-2"), ULMFiT's parts
    # that its ablation kept: concat pooling, a slanted triangular schedule, no discriminative rates,
    # a language-model step on all of the task's training text, up to 10 epochs.
    pooling: str | None = "concat"  # None: the body's default ("last" for an RNN, "mean" for a Transformer)
    lr_body: float = 5e-4  # the body's top layer group
    lr_head: float = 2e-3
    # frozen mode: the head is a linear model on standardised features (a convex problem), trained at
    # this rate instead of lr_head: at 2e-3 it stayed near one answer for its 320 steps (docs/results.md)
    frozen_lr: float = 3e-2
    lr_decay: float = 1.0  # discriminative rates (ULMFiT: 2.6): each lower layer group at the one above's / this
    schedule: str = "linear"  # after a warm-up: linear ("slanted triangular") or cosine decay to 0
    warmup_frac: float = 0.1  # of the steps
    # First fine-tune the language model on the task's training text (ULMFiT), this many steps;
    # None: LM_STEPS for the body's family (about 35 to 40 s each on a 2-core CPU at the laptop sizes).
    lm_steps: int | None = None
    lm_lr: float = 1e-3
    # the LM step reads every training sentence of the task (no labels), or "labelled" ones, or "all+unsup":
    # every one and unlabelled text of the task's domain (IMDB's 50,000 unsup reviews, for imdb and sst2)
    lm_text: str = "all"
    weight_decay: float = 0.01
    epochs: int = 10
    max_steps: int | None = None  # stop earlier than `epochs` (equal budgets across runs)
    batch_size: int = 32
    max_len: int = 64
    train_size: int | None = None  # labelled training sentences to use (a learning curve)
    # the words of the task's training text that the body's vocabulary lacks and that occur at least this
    # often get rows of their own (the mean embedding to start, then the LM step trains them); 0: none
    vocab_min_count: int = 5
    task_lm: bool = False  # with from_scratch: a random body trained by the LM step on the task's text alone
    val_size: int = 2000  # held out from the training sentences for model selection
    eval_every: int = 200
    log_every: int = 10
    patience: int = 4  # evaluations without a better validation accuracy before stopping
    time_budget_s: float | None = None  # stop after this much training time (equal budgets across runs)
    dropout: float = 0.1
    data_dir: str | None = None
    seed: int = 0
    # "bow": no network, the yardstick instead: a bag-of-words logistic regression on the same labelled
    # sentences and words (labkit.train.bow), fitted in seconds
    baseline: str | None = None
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.train_size is not None and self.train_size < 1:
            raise ValueError("train_size must be at least 1")
        for name in ("epochs", "batch_size", "max_len", "eval_every", "log_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        for name in ("lr_body", "lr_head", "lm_lr", "frozen_lr"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a positive number")
        if not 1 <= self.lr_decay < math.inf:
            raise ValueError("lr_decay must be a number >= 1 (1: every layer group at lr_body)")
        if self.schedule not in ("cosine", "linear"):
            raise ValueError(f"schedule must be cosine or linear, got {self.schedule!r}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError("warmup_frac must be in [0, 1)")
        if self.lm_steps is not None and self.lm_steps < 0:
            raise ValueError("lm_steps must be >= 0")
        if self.lm_text not in LM_TEXTS:
            raise ValueError(f"lm_text must be one of {', '.join(LM_TEXTS)}, got {self.lm_text!r}")
        if self.lm_text == "all+unsup" and self.task not in UNLABELLED:
            raise ValueError(f"lm_text all+unsup reads unlabelled text of the task's domain (IMDB's reviews, for "
                             f"{' and '.join(UNLABELLED)}): {self.task} has none")
        if self.vocab_min_count < 0:
            raise ValueError("vocab_min_count must be >= 0 (0: no new words)")
        if self.task_lm and not self.from_scratch:
            raise ValueError("task_lm trains a random body on the task's text: it needs from_scratch")
        if not 0 <= self.dropout < 1:  # (NaN fails too)
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 1 <= self.val_size <= MAX_VAL_SIZE:
            raise ValueError(f"val_size must be 1 to {MAX_VAL_SIZE:,} held-out sentences, got {self.val_size:,}")
        if self.baseline not in (None, "bow"):
            raise ValueError(f"baseline must be bow (or none), got {self.baseline!r}")


def classifier_config(base_config: dict[str, Any], config: FinetuneConfig) -> ClassifierConfig:
    pooling = config.pooling or FAMILIES[base_config["family"]][1].default_pooling
    return ClassifierConfig(body=base_config, n_classes=len(TASKS[config.task]), pooling=pooling,
                            dropout=config.dropout, standardize=config.mode == "frozen")


def build_classifier(base_config: dict[str, Any], config: FinetuneConfig) -> SequenceClassifier:
    return SequenceClassifier(classifier_config(base_config, config))


def train_config(config: FinetuneConfig, n_train: int) -> TrainConfig:
    """The Trainer's settings for a fine-tuning run on `n_train` sentences: `epochs` (or fewer
    steps), a warm-up over the first `warmup_frac` of the steps, then a decay to 0."""
    per_epoch = math.ceil(n_train / config.batch_size)
    steps = min(config.max_steps or math.inf, per_epoch * config.epochs)
    lr = config.frozen_lr if config.mode == "frozen" else config.lr_head
    return TrainConfig(optimizer="adamw", lr=lr, weight_decay=config.weight_decay, schedule=config.schedule,
                       warmup_steps=max(1, round(steps * config.warmup_frac)), min_lr_ratio=0.0, max_steps=int(steps),
                       time_budget_s=config.time_budget_s,
                       batch_size=config.batch_size, seq_len=config.max_len, grad_clip=1.0, betas=(0.9, 0.999),
                       patience=config.patience, eval_every=config.eval_every, eval_batch_size=config.batch_size,
                       log_every=config.log_every, precision=config.precision, device=config.device, seed=config.seed)


def finetuner(model: SequenceClassifier, task: TaskData, config: FinetuneConfig, run: RunDir | None = None,
              callbacks: list[Callback] | tuple = (), pad_id: int = 0, base_run: str | None = None,
              info: dict[str, Any] | None = None) -> Trainer:
    """The Trainer for fine-tuning `model` on `task` (writing `run`, when given); `info` goes on the card."""
    info = {"task": config.task, "mode": config.mode, "from_scratch": config.from_scratch, "task_lm": config.task_lm,
            "base_run": base_run, **(info or {})}
    objective = Classification(task, mode=config.mode, pad_id=pad_id, max_len=config.max_len,
                               body_lr_ratio=config.lr_body / config.lr_head, body_lr_decay=config.lr_decay, info=info)
    return Trainer(model, objective, train_config(config, len(task.train)), run, callbacks)


def finetune(base_run: str | Path, config: FinetuneConfig, out: str | Path, *,
             callbacks: list[Callback] | tuple = (), data: TaskData | None = None,
             stage: LMStage | None = None) -> dict[str, Any]:
    """Fine-tune (or, with `from_scratch`, train afresh) the network of `base_run` on the task.

    `data`: the task already encoded (a notebook encodes SST-2 once for many runs: `encoded_task`),
    with its tokenizer (`data.tokenizer`: the base run's, or the base run's grown with the task's
    words, `task_tokenizer`); it is used as given, `config.train_size` does not cut it. `stage`: the
    body after a shared LM step (`lm_stage`, same base run and condition), instead of doing one here."""
    dist = distributed.setup()
    run = RunDir(out)
    run.check_new()
    with locked(run, dist):
        base = load_run(base_run)
        if base.config.get("kind") != "lm":
            raise RunError(f"{base_run} is not a language-model run (kind {base.config.get('kind')!r}); "
                           "fine-tune a run made by `labkit pretrain`")
        if run.exists():
            raise RunError(f"{run.root} already holds a run: pass --resume to continue it, or choose another --name")
        if stage is not None and (stage.from_scratch, stage.task_lm) != (config.from_scratch, config.task_lm):
            raise LabkitError("the LM stage was made for another condition (from scratch, task text only) than this run's")
        if data is None:
            data = encoded_task(config, stage.tokenizer if stage else task_tokenizer(config, base.tokenizer))
        tokenizer = data.tokenizer or base.tokenizer
        added = grown_words(base.tokenizer, tokenizer)
        if config.baseline == "bow":
            if dist.enabled:
                raise LabkitError("the bag-of-words baseline fits in seconds in one process: run it without torchrun")
            return fit_bow(data, tokenizer, out, settings=config.to_dict(), base_run=str(Path(base_run)))
        body_config = grown_config(base.model.config, added).to_dict()
        saved = {"kind": "classifier", "labkit_version": __version__,
                 "model": classifier_config(body_config, config).to_dict(), "finetune": config.to_dict(),
                 "train": train_config(config, len(data.train)).to_dict(), "base_run": str(Path(base_run)),
                 "labels": list(data.labels), "lm_adaptation": None, "vocab_added": added}
        # the config first, the LM step after: a run killed during that step can be resumed (from step 0)
        dist.check(on_main(dist, lambda: run.create(tokenizer, saved)))
        if stage is not None:
            body, adapted = stage.body, {**stage.info, "lm_stage_shared": True}
        else:
            body = body_to_train(base.model, config, added)
            adapted = adapt(body, tokenizer, data, config, base.config)
        dist.check(on_main(dist, lambda: run.save_config(saved | {"lm_adaptation": adapted})))
        info = {**adapted, "vocab_added": added, "oov_rate_before": unknown_rate(data, base.tokenizer, tokenizer)}
        model = initial_model(body_config, config, body)
        trainer = finetuner(model, data, config, run, callbacks, pad_id=tokenizer.pad_id,
                            base_run=str(Path(base_run)), info=info)
        return trainer.fit()


def on_main(dist: distributed.Dist, write: Any) -> RunError | None:
    """`write()` on rank 0; the RunError it raised (to be shared with `dist.check`), or None."""
    if not dist.is_main:
        return None
    try:
        write()
    except RunError as e:
        return e
    return None


def initial_model(body_config: dict[str, Any], config: FinetuneConfig, body: torch.nn.Module | None) -> SequenceClassifier:
    """The classifier before training: the same weights for the same config and seed (the head,
    and the body too from scratch), with `body`'s weights when given."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_classifier(body_config, config)
    if body is not None:
        model.body.load_state_dict(body.state_dict())
    return model


def resume_finetune(out: str | Path, *, callbacks: list[Callback] | tuple = (),
                    overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Continue a fine-tuning run from its latest checkpoint (optionally longer: `max_steps=...`).
    A run stopped before its first checkpoint starts again from step 0, from its base run."""
    dist = distributed.setup()
    run = RunDir(out)
    with locked(run, dist):
        saved = run.load_config()
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        bad = sorted(set(overrides) - set(RESUMABLE_OVERRIDES))
        if bad:
            raise LabkitError(f"cannot change {', '.join(bad)} when resuming; only {', '.join(RESUMABLE_OVERRIDES)} may change")
        try:
            config = FinetuneConfig.from_dict({**saved["finetune"], **overrides})
            body_config, base_run = saved["model"]["body"], saved["base_run"]
        except (KeyError, TypeError) as e:
            raise RunError(f"{run.config_path} is incomplete or damaged ({e!r})") from None
        checkpoint = run.latest_checkpoint()
        tokenizer = load_tokenizer(run.tokenizer_path)
        data = encoded_task(config, tokenizer)
        adapted = saved.get("lm_adaptation") or {}
        body = None
        if checkpoint is None and (not config.from_scratch or config.task_lm):  # start over, from the base run
            base = load_run(base_run)
            body = body_to_train(base.model, config, grown_words(base.tokenizer, tokenizer))
            adapted = adapt(body, tokenizer, data, config, base.config)
        model = initial_model(body_config, config, body)
        info = {**adapted, "vocab_added": saved.get("vocab_added", 0)}
        trainer = finetuner(model, data, config, run, callbacks, pad_id=tokenizer.pad_id, base_run=base_run, info=info)
        if checkpoint is not None:
            trainer.resume(checkpoint)
        elif trainer.metrics:  # stopped before its first checkpoint: start over, from step 0
            trainer.metrics.truncate_after(0)
        if overrides and trainer.writes:
            run.save_config({k: v for k, v in saved.items() if k != "format_version"}
                            | {"finetune": config.to_dict(), "train": trainer.config.to_dict()})
        return trainer.fit()
