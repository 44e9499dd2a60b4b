"""The run directory: the one contract between whatever trains and whatever looks.

    runs/<name>/
      config.json        model, data and training configs: enough to rebuild everything
      tokenizer.json     the tokenizer / vocabulary
      model.safetensors  best weights (by validation loss): what viewers load
      checkpoints/step-00001200/{model.safetensors,state.pt}
                         the latest checkpoints for resume (weights + optimizer, schedule,
                         RNG and data position); each folder appears whole or not at all
      metrics.jsonl      one JSON record per logged step or evaluation
      card.json          the results card (and status: running, finished, interrupted, failed)

Weights are safetensors; the training state is plain tensors and numbers, loaded with
`torch.load(..., weights_only=True)`: nothing in a run directory can run code when loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from labkit.atomic import atomic_path, write_atomic
from labkit.errors import RunError

FORMAT_VERSION = 1
KEEP_CHECKPOINTS = 2


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    config_path = property(lambda self: self.root / "config.json")
    tokenizer_path = property(lambda self: self.root / "tokenizer.json")
    weights_path = property(lambda self: self.root / "model.safetensors")
    checkpoints_dir = property(lambda self: self.root / "checkpoints")
    metrics_path = property(lambda self: self.root / "metrics.jsonl")
    card_path = property(lambda self: self.root / "card.json")

    @property
    def name(self) -> str:
        return self.root.name

    def exists(self) -> bool:
        return self.config_path.is_file()

    # --- JSON files ---------------------------------------------------------------------
    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def read_json(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(f"{self.root} has no {path.name}: is it a labkit run directory?") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{path} is corrupt ({e}); delete the run or restore the file") from None
        if not isinstance(data, dict):
            raise RunError(f"{path} is corrupt (not a JSON object)")
        return data

    def save_config(self, config: dict[str, Any]) -> None:
        self.write_json(self.config_path, {"format_version": FORMAT_VERSION, **config})

    def load_config(self) -> dict[str, Any]:
        config = self.read_json(self.config_path)
        version = config.get("format_version")
        if version != FORMAT_VERSION:
            raise RunError(f"{self.root} was written in run format {version!r}; this labkit reads "
                           f"format {FORMAT_VERSION}: retrain it or use the matching labkit version")
        return config

    def write_card(self, card: dict[str, Any]) -> None:
        self.write_json(self.card_path, card)

    def read_card(self) -> dict[str, Any]:
        return self.read_json(self.card_path)

    # --- weights and checkpoints --------------------------------------------------------
    def save_best(self, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
        save_weights(model, self.weights_path, metadata)

    def save_checkpoint(self, model: nn.Module, state: dict[str, Any], step: int) -> Path:
        """Write weights and state into a temporary folder, then rename it into place."""
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        final = self.checkpoints_dir / f"step-{step:08d}"
        tmp = Path(tempfile.mkdtemp(dir=self.checkpoints_dir, prefix=".tmp-"))
        try:
            save_weights(model, tmp / "model.safetensors", {"step": str(step)})
            with open(tmp / "state.pt", "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            if final.exists():  # the same step saved again (e.g. at an interrupt right after)
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self.checkpoints()[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first (temporary folders are not listed)."""
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoints_dir.glob("step-*") if (p / "state.pt").is_file())

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors, atomically (save_model also handles tied weights)."""
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata=metadata)


def load_weights(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise RunError(f"{path} is missing: the run has no saved weights yet")
    try:
        missing, unexpected = load_model(model, path, strict=False, device=str(next(model.parameters()).device))
    except (SafetensorError, OSError) as e:
        raise RunError(f"{path} is corrupt or unreadable ({e}); restore it or retrain") from None
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "shape mismatch"
        raise RunError(f"{path} does not match the model in config.json ({first.strip()})") from None
    if missing or unexpected:
        raise RunError(f"{path} does not match the model in config.json "
                       f"(missing: {sorted(missing)[:3]}, unexpected: {sorted(unexpected)[:3]})")


def load_state(path: Path) -> dict[str, Any]:
    """Training state: tensors and numbers only. Anything else (a pickle payload) is refused."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except Exception as e:  # weights_only refuses code objects with an UnpicklingError
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunError(f"refusing to load {path}: not a plain labkit training state ({reason[:160]})") from None
    if not isinstance(state, dict):
        raise RunError(f"refusing to load {path}: not a labkit training state")
    return state


@dataclass
class RunInfo:
    path: Path
    config: dict[str, Any] | None
    card: dict[str, Any] | None
    error: str | None  # why the run cannot be read, when it cannot


def list_runs(root: str | Path) -> list[RunInfo]:
    """Every folder under `root` that looks like a run; unreadable ones carry an error."""
    root = Path(root)
    if not root.is_dir():
        return []
    infos = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        run = RunDir(path)
        try:
            config = run.load_config()
        except RunError as e:
            infos.append(RunInfo(path, None, None, str(e)))
            continue
        try:
            card = run.read_card() if run.card_path.exists() else None
        except RunError as e:
            infos.append(RunInfo(path, config, None, str(e)))
            continue
        infos.append(RunInfo(path, config, card, None))
    return infos


def safe_run_path(root: str | Path, name: str) -> Path:
    """Resolve a run name under `root`, refusing anything that would escape it."""
    if not name or Path(name).is_absolute() or ".." in Path(name).parts or "/" in name or "\\" in name:
        raise RunError(f"invalid run name {name!r}: use a plain name such as 'lstm-1'")
    root = Path(root).resolve()
    path = (root / name).resolve()
    if root not in path.parents:
        raise RunError(f"invalid run name {name!r}: it points outside {root}")
    return path
