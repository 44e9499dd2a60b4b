"""What a job of the training queue (labkit.train.queue) trains, each through the same library
function as the command line, into an ordinary run directory that the command line can resume:
`Pretrain` (`labkit pretrain --preset SIZE --model FAMILY --steps N`), `Finetune` (`labkit finetune
RUN`) and `Resume` (`labkit pretrain|finetune --name RUN --resume`). `check()` refuses a bad setting
before a job waits in line; a corpus or task is read where it is on disk, never downloaded (a
server writes nothing outside its runs folder)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.data.corpora import locate
from labkit.data.lm import DataConfig
from labkit.data.synthetic import CORPORA as SYNTHETIC_CORPORA
from labkit.errors import LabkitError
from labkit.models import config_from_dict
from labkit.presets import SIZES, resolve_preset
from labkit.runs import RunDir, safe_run_path
from labkit.train.finetune import FinetuneConfig, finetune, resume_finetune
from labkit.train.pretrain import pretrain, resume
from labkit.train.settings import TrainConfig

FAMILIES = ("lstm", "transformer")
CORPORA = (*SYNTHETIC_CORPORA, "wikitext-2")  # generated in memory, or read from disk
TASKS = ("number", "sst2")
MODES = ("full", "frozen", "gradual")


@dataclass(frozen=True)
class Pretrain:
    """A new language model: preset `preset` (a size: tiny, demo, laptop, classic, medium) of `family`,
    `steps` optimizer steps (None: the preset's; a laptop preset also stops at its time budget), on
    `corpus` ("synthetic" is generated in memory; "wikitext-2" must be on disk already)."""

    preset: str = "tiny"
    family: str = "lstm"
    steps: int | None = None
    corpus: str = "synthetic"

    def check(self) -> None:
        if self.preset not in SIZES or self.family not in FAMILIES:
            raise LabkitError(f"choose a preset of {', '.join(SIZES)} and a family of {', '.join(FAMILIES)}")
        if self.corpus not in CORPORA or self.steps is not None and self.steps < 1:
            raise LabkitError(f"choose a corpus of {', '.join(CORPORA)} and at least 1 step")
        if self.corpus == "wikitext-2":
            _on_disk("wikitext-2", ("train.txt", "valid.txt", "test.txt"))

    def default_name(self) -> str:
        return f"{self.preset}-{self.family}-{time.strftime('%Y%m%d-%H%M%S')}"  # as `labkit pretrain` names it

    def train(self, runs_dir: Path, out: Path, callbacks: list[Any]) -> dict[str, Any]:
        self.check()  # (again: the files may have gone since it was submitted)
        preset = resolve_preset(self.preset, self.family)
        steps = {"max_steps": self.steps} if self.steps else {}
        data = preset["data"] | {"corpus": self.corpus}
        return pretrain(config_from_dict(preset["model"]), TrainConfig.from_dict(preset["train"] | steps),
                        DataConfig.from_dict(data), out, callbacks=callbacks)


@dataclass(frozen=True)
class Finetune:
    """A classifier on the network of `base` (a language-model run in the same runs folder), trained on
    `task` for `steps` steps with `train_size` labelled sentences (None: all); `from_scratch`: the
    same network with random weights (the comparison that shows what pretraining gave)."""

    base: str
    task: str = "number"
    train_size: int | None = None
    from_scratch: bool = False
    mode: str = "full"
    steps: int = 200
    lm_steps: int = 0  # first a language-model step on the task's text (ULMFiT); 0: none, as the demo does

    def check(self) -> None:
        if self.task not in TASKS or self.mode not in MODES:
            raise LabkitError(f"choose a task of {', '.join(TASKS)} and a mode of {', '.join(MODES)}")
        if self.steps < 1 or self.lm_steps < 0 or self.train_size is not None and self.train_size < 1:
            raise LabkitError("steps and labelled sentences must be at least 1 (language-model steps at least 0)")
        if self.task == "sst2":
            _on_disk("sst2", ("train.tsv", "dev.tsv"))

    def default_name(self) -> str:  # as `labkit finetune` names it
        size = f"-n{self.train_size}" if self.train_size else ""
        return f"{self.base}-{self.task}-{'scratch' if self.from_scratch else self.mode}{size}-s0"

    def train(self, runs_dir: Path, out: Path, callbacks: list[Any]) -> dict[str, Any]:
        self.check()
        config = FinetuneConfig(task=self.task, mode=self.mode, from_scratch=self.from_scratch, train_size=self.train_size,
                                max_steps=self.steps, eval_every=max(1, self.steps // 5), lm_steps=self.lm_steps)
        return finetune(safe_run_path(runs_dir, self.base), config, out, callbacks=callbacks)


@dataclass(frozen=True)
class Resume:
    """The run continued from its latest checkpoint, as `--resume` does (from step 0 when it was
    stopped before its first one)."""

    def train(self, runs_dir: Path, out: Path, callbacks: list[Any]) -> dict[str, Any]:
        kind = RunDir(out).load_config().get("kind", "lm")
        return (resume_finetune if kind == "classifier" else resume)(out, callbacks=callbacks)


def _on_disk(dataset: str, files: tuple[str, ...]) -> None:
    """A LabkitError unless the dataset's files are on disk: a server never downloads into its cache."""
    for name in files:
        locate(dataset, name, download=False)
