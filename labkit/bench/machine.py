"""What `labkit bench` measures of the machine: its matrix-multiply peak (the ceiling its FLOP/s
are compared with), a description of it, and peak memory."""

from __future__ import annotations

import gc
import os
import platform
from pathlib import Path
from typing import Any

import torch

from labkit.device import cpu_has_bf16, matmul_peak


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "threads": torch.get_num_threads(), "cpu_bf16": cpu_has_bf16(),
                            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["processor"] = line.split(":", 1)[1].strip()
                break
        info["load_1min_start"] = os.getloadavg()[0]
    except OSError:
        pass
    info["matmul_peak_fp32"] = matmul_peak(device, torch.float32)
    info["matmul_peak_bf16"] = matmul_peak(device, torch.bfloat16)
    return info


class PeakMemory:
    """Peak resident memory of this process over a stretch of code. On Linux the kernel's
    high-water mark is reset first (/proc/self/clear_refs), so each variant gets its own peak;
    on CUDA the allocator's peak is read too."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.resettable = True
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.resettable = False
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.rss_mb = rss_peak_mb()
        self.cuda_mb = (torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None)


def rss_mb() -> float | None:
    return _status_mb("VmRSS")


def rss_peak_mb() -> float | None:
    peak = _status_mb("VmHWM")
    if peak is None:
        import resource

        scale = 1 if platform.system() == "Darwin" else 1024  # bytes on macOS, KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
    return peak


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
