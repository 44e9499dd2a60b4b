"""The Trainer's checkpoints: everything a run needs to continue exactly where it stopped (weights,
optimizer, RNG, the objective's data position and carried state, the clocks), written through the
run directory (labkit.runs), and `resume` from one. A mixin of labkit.train.trainer.Trainer, kept
apart so that the training loop reads on its own."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from labkit.errors import LabkitError
from labkit.runs import RunDir, load_state, load_weights


class Checkpoints:
    """Trainer methods for checkpoints and the random state they keep (the attributes they use are
    the Trainer's)."""

    def _seed_dropout(self, seed: int, step: int = 0) -> None:
        # Rank 0 draws what a single process would; other ranks draw their own dropout masks.
        seed = seed if self.dist.rank == 0 else seed + 1_000_003 * self.dist.rank + step
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                torch.cuda.manual_seed(seed)

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Within the block, the global generators (CPU, and the run's GPU) hold the trainer's
        random state; after it, the caller's again. Dropout draws from them."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            if self._rng is None:
                self._seed_dropout(self.config.seed, self._seed_step)
            else:
                torch.set_rng_state(self._rng[0])
                if cuda and self._rng[1] is not None:
                    torch.cuda.set_rng_state(self._rng[1], self.device)
            try:
                yield
            finally:
                self._rng = (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if cuda else None)

    def rng_state(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The trainer's random state (CPU, CUDA or None), as the next step will find it."""
        if self._rng is None:
            with self._own_rng():
                pass
        assert self._rng is not None
        return self._rng

    def state_dict(self) -> dict[str, Any]:
        """Everything to resume, independent of the number of processes: the data position
        and RNG are the same on every rank (rank 0's RNG is kept)."""
        state = {
            "step": self.step, "tokens_seen": self.tokens_seen, "elapsed": self.elapsed,
            "wall_clock": self._wall_clock(),
            "best": self.best, "bad_evals": self.bad_evals, "last_eval_step": self._last_eval_step,
            "optimizer": self.optimizer.state_dict(), "objective": self.objective.state_dict(self),
            "rng_torch": self.rng_state()[0],
            "plateau": self.plateau.state_dict() if self.plateau else None, "world_size": self.dist.world_size,
            "scaler": self.scaling.state_dict(),  # fp16's loss scale and skipped steps; None otherwise
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = self.rng_state()[1]
        return state

    def save_checkpoint(self) -> None:
        if not self.run:
            return
        state = self.state_dict()  # on every rank: gathering the RNN state takes them all
        saved: list[Any] = []
        self._on_main(lambda: saved.append(self.run.save_checkpoint(self.model, state, self.step)))
        self.dist.check(self._write_error)
        if saved:
            self._emit("on_checkpoint", {"step": self.step, "checkpoint": str(saved[0].relative_to(self.run.root))})

    def resume(self, checkpoint: os.PathLike | str) -> None:
        """Continue exactly where a checkpoint left off: weights, optimizer, RNG, data position."""
        checkpoint = Path(checkpoint)
        load_weights(self.model, RunDir.checkpoint_weights(checkpoint))
        state = load_state(RunDir.checkpoint_state(checkpoint))
        if "objective" not in state and "batches" in state:  # written by labkit before the objectives
            state = state | {"objective": {k: state[k] for k in ("batches", "epoch", "rnn_state")},
                             "best": state["best_val_loss"], "bad_evals": 0}
        try:
            self.objective.load_state_dict(self, state["objective"])
            self.objective.before_step(self)  # which parameters train, before the optimizer is made
            self.optimizer.load_state_dict(state["optimizer"])
            rng = state["rng_torch"]
            torch.Generator().set_state(rng)  # a damaged state is refused here, not at the next step
            self._rng = (rng, state.get("rng_cuda") if self.device.type == "cuda" else None)
            self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])
            self._resumed_at = self.step
            if self.step < 0 or self.tokens_seen < 0 or not math.isfinite(float(state["elapsed"])):
                raise ValueError(f"step {state['step']}, tokens {state['tokens_seen']}, elapsed {state['elapsed']}")
            self.elapsed, self.best = float(state["elapsed"]), float(state["best"])
            self.wall_clock = float(state.get("wall_clock", self.elapsed))  # (runs from before it was kept)
            self.bad_evals, self._last_eval_step = int(state["bad_evals"]), int(state.get("last_eval_step", -1))
            if self.plateau and state["plateau"]:
                self.plateau.load_state_dict(state["plateau"])
            self.scaling.load_state_dict(state.get("scaler"))
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError, OverflowError) as e:
            raise LabkitError(f"{checkpoint} does not match this run's configuration ({e}); "
                              "start a new run instead of --resume") from None
        if self.dist.rank > 0:  # its own masks, seeded from the step (rank 0's state is the one kept)
            self._rng, self._seed_step = None, self.step
        if self.metrics:
            self.metrics.truncate_after(self.step)  # steps after the checkpoint run again
