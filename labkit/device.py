"""Device and precision choice: CUDA (bf16), then Apple MPS, then CPU."""

from __future__ import annotations

import contextlib

import torch

from labkit.errors import LabkitError

PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps") or (
            device.type != "cuda" and device.index not in (None, 0)):
        raise LabkitError(f"unknown device {preference!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LabkitError("CUDA was asked for but torch sees no GPU; use --device cpu, or install "
                          "a CUDA build of torch (see README, 'GPU')")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LabkitError("MPS was asked for but is not available here; use --device cpu")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' means bf16 on CUDA (when the GPU supports it) and fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise LabkitError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
