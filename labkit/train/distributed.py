"""Data-parallel training over several processes: `torchrun ... -m labkit pretrain`.

torchrun starts N copies of the same command and tells each one its place through the
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). `setup()` reads it and
joins the process group (NCCL for CUDA tensors, gloo for CPU ones); without torchrun it returns
a single-process `Dist` whose helpers do nothing, so the Trainer has one code path.

How the work is split, so that N processes train like one:

- `--batch-size` is the global batch. Rank r takes rows [r B/N, (r+1) B/N) of the batch a
  single process would have read (`labkit.data.batching.shard_rows`): for an RNN its own
  streams (and their hidden state), for a Transformer its own share of the random windows,
  which every rank draws from the same generator.
- DistributedDataParallel averages the gradients. The shards are equal, so the average of the
  per-rank mean losses' gradients is the gradient of the global mean loss.
- Rank 0 alone evaluates, and writes metrics, checkpoints and the card; it broadcasts the
  validation results so every rank makes the same schedule decisions.
- Checkpoints hold global state only (the data position, the whole batch's RNN state, rank 0's
  RNG), so a run resumes on any number of processes.
- Stopping is decided together once per step: a signal seen by any rank, a non-finite loss
  (the logged loss is the all-reduced one) or the time budget (the slowest rank's clock) stops
  every rank at the same step, and a failed write on rank 0 stops the others too.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from labkit.errors import LabkitError

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_ENV)


@dataclass(frozen=True)
class Dist:
    """This process's place in the run. `Dist()` is a single process: every helper is a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False  # a process group is up (torchrun, even with one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        """One GPU per process: cuda:LOCAL_RANK on a multi-GPU node."""
        if self.enabled and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to call for training: DistributedDataParallel over `model`, or `model`."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # --- collectives on a few numbers (CPU tensors: gloo carries them) ------------------
    def _reduce(self, values: Sequence[float], op: dist.ReduceOp) -> list[float]:
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(t, op=op)
        return t.tolist()

    def mean(self, value: float) -> float:
        return self._reduce([value], dist.ReduceOp.SUM)[0] / self.world_size

    def sum(self, values: Sequence[float]) -> list[float]:
        return self._reduce(values, dist.ReduceOp.SUM)

    def max(self, values: Sequence[float]) -> list[float]:
        return self._reduce(values, dist.ReduceOp.MAX)

    def broadcast(self, values: Sequence[float]) -> list[float]:
        """Rank 0's `values` on every rank."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.broadcast(t, src=0)
        return t.tolist()

    def gather_rows(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Every rank's `t`, concatenated along `dim` in rank order (the whole batch)."""
        if not self.enabled:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=dim)

    def check(self, error: BaseException | None) -> None:
        """Raise on every rank if any rank has an `error` (rank 0's write failed, say)."""
        if not self.enabled:
            if error is not None:
                raise error
            return
        failed = self.max([error is not None])[0]
        if error is not None:
            raise error
        if failed:
            raise LabkitError("stopped because another process of this run failed (its message "
                              "is above)")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @contextlib.contextmanager
    def quiet_unless_main(self) -> Iterator[None]:
        """Run a block with its output silenced on ranks other than 0: one copy of the progress
        and the messages (errors are still printed by every rank, see labkit.cli.main)."""
        if self.is_main:
            yield
            return
        with (open(os.devnull, "w") as null, contextlib.redirect_stdout(null),
              contextlib.redirect_stderr(null)):
            yield


def current() -> Dist:
    """The process group this process belongs to, if any."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", 0)), enabled=True)


def setup() -> Dist:
    """Join torchrun's process group (once per process); a single process without torchrun."""
    if not launched_by_torchrun() or not dist.is_available():
        return Dist()
    if not dist.is_initialized():
        # NCCL moves CUDA tensors (DDP's gradients on GPUs), gloo CPU ones (DDP on CPUs, and
        # the few numbers the ranks agree on each step).
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        try:
            dist.init_process_group(backend)
        except (RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LabkitError(f"cannot join the torchrun process group ({first})") from None
    return current()


def teardown() -> None:
    """Leave the process group. The objects that hold its work (DDP's reducer, in a cycle with the
    trainer) are collected first, while the group and the interpreter are whole: left to the
    interpreter's exit, gloo's threads were destroyed under them and the process aborted
    ("terminate called without an active exception", exit -6) after a finished run."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
