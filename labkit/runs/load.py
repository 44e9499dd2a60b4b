"""Reading runs for whoever looks at them: the list of runs, their status, and loading a model.

A run's card says "running" from its first step until it ends; if the process that wrote it was
killed (no chance to write "interrupted"), the card keeps saying "running". So a run counts as
running only while the card says so *and* its process is alive; otherwise it is shown as
"interrupted (stale)".
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labkit.data.tokenizers import Tokenizer, load_tokenizer
from labkit.device import pick_device
from labkit.errors import LabkitError, RunError
from labkit.models import build_model, config_from_dict
from labkit.runs.layout import RunDir, load_weights

STALE = "interrupted (stale)"


@dataclass
class RunInfo:
    path: Path
    config: dict[str, Any] | None
    card: dict[str, Any] | None
    error: str | None  # why the run cannot be read, when it cannot

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def run(self) -> RunDir:
        return RunDir(self.path)


def read_info(path: str | Path) -> RunInfo:
    """One run's config and card; an unreadable run carries its error instead."""
    run = RunDir(path)
    try:
        config = run.load_config()
    except RunError as e:
        return RunInfo(run.root, None, None, str(e))
    try:
        card = run.read_card() if run.card_path.exists() else None
    except RunError as e:
        return RunInfo(run.root, config, None, str(e))
    return RunInfo(run.root, config, card, None)


def list_runs(root: str | Path) -> list[RunInfo]:
    """Every folder under `root` that looks like a run; unreadable ones carry an error."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [read_info(p) for p in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]


def pid_alive(pid: Any) -> bool:
    """Whether a process with this id exists (and, on Linux, is not a zombie)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except (OSError, OverflowError):
        return False
    if sys.platform.startswith("linux"):
        try:  # a finished child not yet reaped still answers kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            return state not in ("Z", "X")
        except (OSError, IndexError):
            return False
    return True


def run_status(info: RunInfo) -> str:
    """finished, running, interrupted, failed, interrupted (stale), incomplete or unreadable."""
    if info.error:
        return "unreadable"
    if not info.card:
        return "incomplete"  # config written, training not started (or the card was lost)
    status = str(info.card.get("status", "?"))
    if status == "running" and not pid_alive(info.card.get("pid")):
        return STALE
    return status


def run_kind(info: RunInfo) -> str:
    """"lm" (pretraining) or "classifier" (fine-tuning); older runs without a kind are LMs."""
    return str((info.config or {}).get("kind", "lm"))


def model_label(config: dict[str, Any] | None) -> str:
    """A short name for the model: lstm, gru, rnn_tanh, transformer, ..."""
    model = (config or {}).get("model") or {}
    if not isinstance(model, dict):
        return "?"
    if isinstance(model.get("body"), dict):  # a classifier: the language model it is built on
        return f"{model_label({'model': model['body']})} {model.get('family', 'classifier')}"
    return str(model.get("cell") or model.get("family") or "?")


def is_transformer(info: RunInfo) -> bool:
    model = (info.config or {}).get("model")
    return run_kind(info) == "lm" and isinstance(model, dict) and model.get("family") == "transformer"


def has_weights(info: RunInfo) -> bool:
    return info.run.weights_path.is_file()


def weights_stamp(info: RunInfo) -> tuple[int, int]:
    """(mtime, size) of the run's best weights: what cached results of a run are keyed on, so that
    they are recomputed when the weights change. Raises FileNotFoundError when there are none."""
    weights = info.run.weights_path.stat()
    return weights.st_mtime_ns, weights.st_size


@dataclass
class LoadedRun:
    run: RunDir
    model: nn.Module
    tokenizer: Tokenizer
    config: dict[str, Any]


def load_run(path: str | Path, *, which: str = "best", device: str | torch.device = "cpu",
             fast: bool = True) -> LoadedRun:
    """Model (eval mode) and tokenizer of a run, a language model or a classifier.

    `which` is "best" (lowest validation loss) or "last" (the latest checkpoint). `fast=False`:
    the plain model of labkit/models/rnn.py and transformer.py, the code a student reads and
    edits (the default, fast one swaps in labkit.models.fast's kernels, which an edit there does
    not reach)."""
    run = RunDir(path)
    if not run.root.is_dir():
        raise RunError(f"{run.root} does not exist")
    config = run.load_config()
    if "model" not in config:
        raise RunError(f"{run.config_path} has no model section: not a labkit run")
    model_config = config_from_dict(config["model"])
    run.confined(run.tokenizer_path)
    tokenizer = load_tokenizer(run.tokenizer_path)
    vocab_size = getattr(model_config, "vocab_size", None) or model_config.body.get("vocab_size")
    if tokenizer.vocab_size != vocab_size:
        raise RunError(f"{run.root}: tokenizer has {tokenizer.vocab_size} tokens but the model "
                       f"expects {vocab_size}; the run is inconsistent")
    try:
        model = build_model(model_config, fast=fast)
    except (RuntimeError, MemoryError) as e:
        raise RunError(f"{run.config_path} asks for a model this machine cannot hold "
                       f"({str(e).strip()[:120]})") from None
    model = model.to(pick_device(str(device)) if isinstance(device, str) else device)
    if which == "best":
        weights = run.weights_path
    elif which == "last":
        checkpoint = run.latest_checkpoint()
        weights = run.checkpoint_weights(checkpoint) if checkpoint else run.weights_path
    else:
        raise LabkitError(f"which must be 'best' or 'last', got {which!r}")
    run.confined(weights)  # a link that leads out of the run is refused, never loaded
    load_weights(model, weights)
    return LoadedRun(run, model.eval(), tokenizer, config)
