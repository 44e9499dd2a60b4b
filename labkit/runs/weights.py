"""The run's weights and training state on disk: safetensors for the weights (read back only into
floating-point parameters of the model the config describes), and the training state as tensors
and numbers, loaded with `torch.load(..., weights_only=True)` after its archive's declared sizes are
checked. Nothing read here can run code."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from labkit.atomic import atomic_path, check_archive, check_regular
from labkit.errors import LabkitError, RunError


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors, atomically (save_model also handles tied weights)."""
    with atomic_path(path) as tmp:
        mode = tmp.stat().st_mode & 0o777  # 0666 less the umask; safetensors makes its files 0600
        try:
            save_model(model, str(tmp), metadata=metadata)
            tmp.chmod(mode)
        except SafetensorError as e:  # "... I/O error: No space left on device (os error 28)"
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            raise OSError(int(code[1]), os.strerror(int(code[1]))) from None


FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}  # safetensors' names: every labkit weight is one of these


def load_weights(model: nn.Module, path: Path) -> None:
    try:
        check_regular(path, "weights file")
    except FileNotFoundError:
        raise RunError(f"{path} is missing: the run has no saved weights yet") from None
    except LabkitError as e:
        raise RunError(str(e)) from None
    try:
        with safe_open(str(path), framework="pt") as f:  # the header only: what each tensor holds
            wrong = sorted(name for name in f.keys() if f.get_slice(name).get_dtype() not in FLOAT_DTYPES)
        if wrong:
            raise RunError(f"{path} holds whole numbers or booleans ({', '.join(wrong[:3])}) where the model has "
                           "floating-point weights: it is not a labkit weights file; restore it or retrain")
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
        check_regular(path, "training state")
        check_archive(path, "training state")
        with open(path, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except LabkitError as e:
        raise RunError(str(e)) from None
    except Exception as e:  # weights_only refuses code objects with an UnpicklingError
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunError(f"refusing to load {path}: not a plain labkit training state ({reason[:160]})") from None
    if not isinstance(state, dict):
        raise RunError(f"refusing to load {path}: not a labkit training state")
    return state
