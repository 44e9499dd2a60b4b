"""Device and precision choice: CUDA (bf16), then Apple MPS, then CPU."""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from labkit.errors import LabkitError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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
                          "a CUDA build of torch (docs/guide.md, 'GPU')")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LabkitError("MPS was asked for but is not available here; use --device cpu")
    return device


THREADS_ENV = "LABKIT_THREADS"  # a number of threads, or "torch" for torch's own default
_TORCH_THREADS = torch.get_num_threads()  # torch's default here (one per physical core, or OMP_NUM_THREADS)


def cpu_threads(load: float | None = None, cores: int | None = None, default: int | None = None) -> int:
    """How many CPU threads torch should train with now: its default (one per physical core) less
    the cores other work keeps busy (`busy_cores`, rounded), at least one. torch's threads wait
    for each other at every operation, so one put off by another program holds up the rest: on a
    2-core machine with other work running, two threads train slower than one (docs/benchmarks.md,
    "Threads on a busy CPU"). Where that cannot be read, torch's default."""
    default = default or _TORCH_THREADS
    load = busy_cores() if load is None else load
    if load is None:
        return default
    return max(1, min(default, (cores or os.cpu_count() or 1) - round(load)))


def busy_cores(seconds: float = 0.25, stat: str = "/proc/stat") -> float | None:
    """How many cores other programs keep busy now: on Linux the CPU time /proc/stat counts over
    `seconds` (this process sleeps meanwhile), elsewhere the 1-minute load average, None where
    neither can be read. Not the load average where /proc/stat is at hand: that one still counts,
    for a minute, work that has just ended (a notebook run right after another would take one
    thread on a quiet 2-core machine)."""
    try:
        before = Path(stat).read_text()
        time.sleep(seconds)
        return busy_between(before, Path(stat).read_text())
    except (OSError, ValueError):
        return load_average()


def busy_between(before: str, after: str) -> float:
    """The cores busy between two readings of /proc/stat: the share of the CPU time counted in
    between (all cores, the first line) that was not idle or waiting on I/O, times the cores."""
    def times(text: str) -> tuple[int, list[int]]:
        lines = text.splitlines()
        if not lines or lines[0].split()[0] != "cpu":
            raise ValueError("not a /proc/stat")
        cores = sum(1 for line in lines[1:] if line.startswith("cpu"))
        return cores, [int(x) for x in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal

    cores, first = times(before)
    _, second = times(after)
    spent = [b - a for a, b in zip(first, second)]
    total = sum(spent)
    if total <= 0:
        raise ValueError("no CPU time between the readings")
    return cores * (total - spent[3] - spent[4]) / total


def load_average() -> float | None:
    """The 1-minute load average, or None where it cannot be read (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def use_cpu_threads() -> str:
    """Set torch's CPU threads for this process (a notebook's kernel, a training command) and say
    how many and why: `LABKIT_THREADS` (a number, or "torch" for torch's default); else, when
    OMP_NUM_THREADS is set, torch's threads as they are; else `cpu_threads()`."""
    wanted = os.environ.get(THREADS_ENV, "").strip().lower()
    change = f"{THREADS_ENV}=N to change"
    if not wanted and os.environ.get("OMP_NUM_THREADS"):
        return f"{torch.get_num_threads()} (OMP_NUM_THREADS is set: left as it is)"
    if wanted == "torch":
        torch.set_num_threads(_TORCH_THREADS)
        return f"{_TORCH_THREADS} (torch's default, from {THREADS_ENV}=torch)"
    if wanted:
        if not wanted.isdigit() or int(wanted) < 1:
            raise LabkitError(f"{THREADS_ENV} must be a number of threads (1 or more) or 'torch', not {wanted!r}")
        torch.set_num_threads(int(wanted))
        return f"{wanted} (from {THREADS_ENV})"
    busy = busy_cores()
    threads = _TORCH_THREADS if busy is None else cpu_threads(busy)
    torch.set_num_threads(threads)
    said = "" if busy is None else f", {busy:.1f} busy"
    return f"{threads} of {os.cpu_count()} cores{said}: what other work leaves free ({change})"


def cpu_has_bf16() -> bool:
    """Does this CPU multiply bf16 matrices natively (AVX-512 BF16 or AMX)? There, bf16 matrix
    products run 2.5 to 5 times faster than fp32 ones (measured in docs/benchmarks.md); elsewhere
    they are emulated and slower."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def cuda_has_bf16(device: torch.device) -> bool:
    """Does this GPU compute in bf16 natively (compute capability 8.0 and up: A100, H100, RTX 30xx
    on)? A T4 or a V100 does not: torch may emulate bf16 there, slowly. The one place labkit asks
    CUDA what a card can do."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' means bf16 autocast on a GPU that computes in bf16 natively, fp16 with a gradient
    scaler on one that does not (a T4, a V100: labkit.train.scaling), bf16 on CPUs with native bf16
    matrix products, fp32 elsewhere (MPS, older CPUs). Weights, optimizer state and every softmax
    stay in fp32 either way. fp16 may be asked for on a CPU too (slow: it is there to test the
    scaler's path)."""
    if precision not in PRECISIONS:
        raise LabkitError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if cuda_has_bf16(device) else "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        # emulated bf16 is slower than fp32, and oneDNN has no bf16 LSTM kernel for such a CPU
        raise LabkitError("--precision bf16: this CPU has no native bf16 matrix products (AVX-512 BF16 or AMX); "
                          "use --precision fp32 (or auto, which picks it here)")
    return precision


@contextlib.contextmanager
def training_memory(device: torch.device) -> Iterator[None]:
    """Within the block, on a CPU, a setting that makes training faster without changing what it
    computes: glibc's allocator keeps freed blocks of up to 32 MB instead of handing them back to
    the system. Otherwise every step maps fresh pages for its activations and gradients and pays a
    page fault per 4 kB when it first writes them (11 to 17% of a step, docs/benchmarks.md). After
    the block, glibc's default thresholds again, and the memory kept is handed back: a notebook's
    kernel does not hold a run's freed memory once training is done. The setting is the
    process's, so it is counted: runs training at once in threads keep it until the last ends."""
    global _training_runs, _kept
    if device.type != "cpu":
        yield
        return
    with _training_lock:  # the setting is the process's: kept while any run trains (a server's sessions)
        _training_runs += 1
        if _training_runs == 1:
            _kept = keep_freed_memory()
    try:
        yield
    finally:
        with _training_lock:
            _training_runs -= 1
            if _training_runs == 0 and _kept:
                _kept = not release_freed_memory()


_training_lock = threading.Lock()
_training_runs, _kept = 0, False


@contextlib.contextmanager
def denormals_flushed(device: torch.device) -> Iterator[None]:
    """Within the block, on a CPU, treat denormal floats (below 1.2e-38) as zero. Fine-tuning a
    pretrained LSTM fills its gates' gradients with them, and each one costs a hundred times a
    normal multiply: it made fine-tuning twice as slow (14.7 against 7.3 ms a step). They are far
    below anything that changes a weight. The processor flag is the thread's, so it is set only
    around training steps and cleared after (torch's default), not left on for the caller's code."""
    if device.type != "cpu":
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to reuse freed memory (see `training_memory`); False where there is
    no glibc (macOS, musl), or LABKIT_KEEP_FREED_MEMORY=0, and nothing was changed."""
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if os.environ.get("LABKIT_KEEP_FREED_MEMORY", "1") == "0":  # to measure what it gives
        return False
    return _mallopt(((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 256 << 20)))


GLIBC_DEFAULTS = ((M_MMAP_THRESHOLD, 128 << 10), (M_TRIM_THRESHOLD, 128 << 10), (M_TOP_PAD, 128 << 10))  # man mallopt


def release_freed_memory() -> bool:
    """glibc's default thresholds again (man mallopt: 128 kB each; the mmap threshold then stays
    fixed, where glibc would let it grow), and what the allocator keeps handed back (malloc_trim)."""
    return _mallopt(GLIBC_DEFAULTS, trim=True)


def _mallopt(settings: tuple[tuple[int, int], ...], trim: bool = False) -> bool:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = all(libc.mallopt(param, value) == 1 for param, value in settings)
        if trim:
            libc.malloc_trim(0)
        return done
    except (OSError, AttributeError):
        return False
def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision in ("bf16", "fp16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timing a GPU needs it; a CPU has none)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.lru_cache(maxsize=8)
def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float | None:
    """FLOP/s of a large square matrix product in `dtype`: the practical ceiling that a model's
    FLOP/s is measured against (model FLOPs utilization). Measured once per process."""
    n = 8192 if device.type == "cuda" else 1024
    try:  # its own generator: drawing from the global one would change a training run's dropout masks
        g = torch.Generator(device).manual_seed(0)
        a = torch.randn(n, n, device=device, generator=g).to(dtype)
        b = torch.randn(n, n, device=device, generator=g).to(dtype)
    except RuntimeError:
        return None
    times = []
    for i in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        for _ in range(4 if device.type == "cuda" else 1):
            a @ b
        sync(device)
        if i:  # the first one warms up
            times.append((time.perf_counter() - start) / (4 if device.type == "cuda" else 1))
    return 2 * n ** 3 / statistics.median(times)
