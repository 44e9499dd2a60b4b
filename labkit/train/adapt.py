"""Language-model fine-tuning on the task's own text, before the classifier (ULMFiT's second stage).

A language model pretrained on Wikipedia has never read film reviews. A few hundred steps of the
same next-token objective on the task's training sentences (their text only, no labels; never the
test sentences) adapt it to their words and style, and the classifier then starts from a body that
already reads that text well. `adapt_language_model` measures the gain on the task's validation
sentences, before and after.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from labkit.data import tasks
from labkit.data.lm import LMData
from labkit.data.tasks import TaskData, TextEncoder, load_task
from labkit.errors import LabkitError
from labkit.models import build_model
from labkit.models.grow import grow_vocabulary, grown_config
from labkit.runs import load_run
from labkit.train.objectives import LanguageModeling
from labkit.train.settings import TrainConfig
from labkit.train.trainer import Trainer

if TYPE_CHECKING:
    from labkit.train.finetune import FinetuneConfig


def task_text(task: TaskData, tokenizer: Any, extra: torch.Tensor | None = None) -> LMData:
    """The task's sentences as one language-modelling stream each split: every sentence's ids,
    then `<eos>` (as a corpus line). Train from the training sentences (then `extra`, a stream of
    the task's unlabelled text, when given), valid (and test) from the validation sentences."""
    def stream(rows: list[tuple[list[int], int]]) -> torch.Tensor:
        return torch.tensor([i for ids, _ in rows for i in (*ids, tokenizer.eos_id)], dtype=torch.long)

    train, valid = stream(task.train), stream(task.val)
    if extra is not None:
        train = torch.cat([train, extra])
    return LMData(tokenizer, train, valid, valid, {"train": 1.0, "valid": 1.0, "test": 1.0})


def adapt_language_model(model: nn.Module, tokenizer: Any, task: TaskData, *, steps: int, lr: float,
                         base: TrainConfig, device: str = "auto", seed: int = 0,
                         extra: torch.Tensor | None = None) -> dict[str, float]:
    """Train `model` (a language model, in place) for `steps` steps on the task's text (and `extra`,
    its unlabelled text) with the settings of its pretraining (`base`: batch, window, optimizer), a
    short warm-up and a linear decay from `lr`. Returns the validation loss per token on the task's
    text before and after."""
    data = task_text(task, tokenizer, extra)
    window = min(base.seq_len, max(2, (data.train.numel() - 1) // max(1, base.batch_size) - 1))
    config = base.replace(lr=lr, max_steps=steps, time_budget_s=None, eval_every=steps + 1, eval_every_s=None,
                          warmup_steps=max(1, steps // 10), schedule="linear", min_lr_ratio=0.0, seq_len=window,
                          eval_stride=None, patience=None, device=device, seed=seed)
    trainer = Trainer(model, LanguageModeling(data), config)
    before = trainer.evaluate("valid")["loss"]
    card = trainer.fit()
    after = card["best_val_loss"]
    return {"lm_steps": steps, "lm_val_loss_before": before, "lm_val_loss_after": after,
            "lm_val_ppl_before": math.exp(min(before, 50)), "lm_val_ppl_after": math.exp(min(after, 50)),
            "lm_tokens": card["tokens_seen"]}


# --- the LM stage of a fine-tuning run (its settings: labkit.train.finetune.FinetuneConfig) -------------
LM_STEPS = {"rnn": 200, "transformer": 60}  # the LM step's default length, by the body's family


@dataclass
class LMStage:
    """The body a classifier starts from, after the language-model step on the task's training text
    (ULMFiT's second stage), made once by `lm_stage` and shared by many fine-tuning runs: label
    budgets, seeds, modes. `body` is None for a run from scratch (no LM stage at all)."""

    body: torch.nn.Module | None
    tokenizer: Any  # the base run's, grown with the task's words
    info: dict[str, Any]  # what the LM step did (lm_steps, lm_val_loss_before / after, ...)
    from_scratch: bool
    task_lm: bool


def lm_stage(base_run: str | Path, config: FinetuneConfig) -> LMStage:
    """`config.lm_steps` steps of language modelling on all of the task's training text (labels
    unread) for the body `config` starts from: the pretrained one, or with `task_lm` a random one."""
    base = load_run(base_run)
    tokenizer = task_tokenizer(config, base.tokenizer)
    data = encoded_task(config.replace(train_size=None), tokenizer)
    body = body_to_train(base.model, config, grown_words(base.tokenizer, tokenizer))
    return LMStage(body, tokenizer, adapt(body, tokenizer, data, config, base.config), config.from_scratch,
                   config.task_lm)


def grown_words(base: Any, tokenizer: Any) -> int:
    """How many words `tokenizer` adds to the end of the base run's vocabulary (0 for the same one)."""
    if tokenizer is base or tokenizer.vocab_size == base.vocab_size:
        return 0
    old = getattr(base, "vocab", None)
    if old is None or tokenizer.vocab.itos[: len(old)] != old.itos:
        raise LabkitError("the task was encoded with a tokenizer that is not the base run's (nor the base run's "
                          "grown with the task's words): encode it with encoded_task")
    return tokenizer.vocab_size - base.vocab_size


def body_to_train(pretrained: torch.nn.Module, config: FinetuneConfig, added: int) -> torch.nn.Module | None:
    """The language model the classifier starts from: the pretrained one (grown by `added` words),
    a random one of the same shape that the LM step will train on the task's text alone (`task_lm`),
    or None (from scratch: the classifier's own random body)."""
    if not config.from_scratch:
        return grow_vocabulary(pretrained, added)
    if not config.task_lm:
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model(grown_config(pretrained.config, added)).to(next(pretrained.parameters()).device)


def unknown_rate(data: TaskData, base: Any, tokenizer: Any) -> float:
    """The task's <unk> rate without the new words: the share of its tokens (those `data.oov_rate`
    counts) that the base run's vocabulary lacks."""
    if tokenizer is base or base.unk_id is None:
        return data.oov_rate
    ids = [i for part in (data.train, data.val, data.test) for ids, _ in part for i in ids]
    return sum(i == base.unk_id or i >= base.vocab_size for i in ids) / max(len(ids), 1)


def task_tokenizer(config: FinetuneConfig, tokenizer: Any) -> Any:
    """The base run's tokenizer with the words of the task's training text it lacks (those seen at
    least `config.vocab_min_count` times), from scratch too: the conditions share one vocabulary."""
    return tasks.task_tokenizer(config.task, tokenizer, config.vocab_min_count, data_dir=config.data_dir,
                                val_size=config.val_size)


def adapt(body: torch.nn.Module | None, tokenizer: Any, task: TaskData, config: FinetuneConfig,
          base_config: dict[str, Any]) -> dict[str, Any]:
    """`config.lm_steps` steps of language modelling on the task's training text for a pretrained
    body (in place): what the card says of it, or nothing (from scratch, or lm_steps 0). The text is
    the labelled sentences, or with `lm_text="all"` every training sentence of the task, its label
    unread (semi-supervised), or with "all+unsup" those and the task's unlabelled texts too (IMDB's
    50,000 unsup reviews: all of IMDb's reviews that ULMFiT read but the test ones); never the
    validation or test sentences."""
    steps = lm_steps(config, base_config.get("model", {}))
    if body is None or not steps:
        return {}
    if config.lm_text in ("all", "all+unsup"):
        everything = task.all_train or (task.train if config.train_size is None else
                                        encoded_task(config.replace(train_size=None), tokenizer).train)
        task = dataclasses.replace(task, train=everything, all_train=None)
    extra, unlabelled = None, {}
    if config.lm_text == "all+unsup":
        extra, n = tasks.unlabelled_stream(config.task, TextEncoder(tokenizer), config.data_dir)
        unlabelled = {"lm_text_unlabelled": n}
    pretraining = TrainConfig.from_dict(base_config["train"])
    result = adapt_language_model(body, tokenizer, task, steps=steps, lr=config.lm_lr, base=pretraining,
                                  device=config.device, seed=config.seed, extra=extra)
    return {**result, "lm_text_sentences": len(task.train), **unlabelled}


def lm_steps(config: FinetuneConfig, body_config: dict[str, Any]) -> int:
    """How many language-model steps on the task's text come first: `config.lm_steps`, or for None
    the default for the body's family."""
    return LM_STEPS.get(body_config.get("family"), 0) if config.lm_steps is None else config.lm_steps


def encoded_task(config: FinetuneConfig, tokenizer: Any) -> TaskData:
    return load_task(config.task, TextEncoder(tokenizer), data_dir=config.data_dir, val_size=config.val_size,
                     train_size=config.train_size, seed=config.seed)
