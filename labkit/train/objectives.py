"""What differs between training tasks, for the one Trainer: batches, the loss, evaluation,
which evaluation is best, the optimizer's parameter groups, and the task's part of the card.

- `LanguageModeling`: next-token prediction on a token stream (pretraining). A model that carries
  state (an RNN) reads consecutive bptt windows and carries its hidden state, detached; one that
  does not (a Transformer) reads random windows.
- `Classification` (labkit.train.classification): a label per sentence (fine-tuning).

Both keep their data position (and an RNN's carried state) in `state_dict()`, so a resumed run
reads exactly the batches it would have read.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from labkit.data.batching import (
    BPTTBatches,
    RandomWindows,
    batchify,
    strided_windows,
)
from labkit.data.lm import LMData
from labkit.device import autocast, matmul_peak
from labkit.errors import LabkitError
from labkit.models.loss import lm_loss
from labkit.models.output import train_flops_per_token
from labkit.train.contract import TrainerView


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only, not on biases and norms (their 1-D parameters)."""
    params = [p for p in model.parameters()]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay, "lr_scale": 1.0},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "lr_scale": 1.0}]


class LanguageModeling:
    """Pretraining: the mean next-token loss; model selection by validation loss (lower is better)."""

    kind = "lm"
    select = ("val_loss", "min")
    shared_keys = ("loss", "ppl", "word_ppl", "tokens")  # what rank 0 tells the others after evaluating
    test_weights = "last"  # the card's test figures are those of the final weights

    def __init__(self, data: LMData):
        self.data = data
        self.epoch = 0
        self._state: Any = None  # the RNN hidden state carried across windows
        self._iter = None

    def attach(self, trainer: TrainerView) -> None:
        c, model = trainer.config, trainer.model
        self.stateful = bool(model.carries_state)
        context = model.context_length
        if context is not None and c.seq_len > context:
            raise LabkitError(f"seq_len {c.seq_len} exceeds the model's context length {context}")
        if self.stateful:  # this process's rows (streams) of the global batch
            self.batches: BPTTBatches | RandomWindows = BPTTBatches(
                batchify(self.data.train, c.batch_size)[trainer.rows], c.seq_len)
        else:
            self.batches = RandomWindows(self.data.train, c.seq_len, c.batch_size, seed=c.seed, rows=trainer.rows)

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        return decay_groups(model, weight_decay)

    def before_step(self, trainer: TrainerView) -> None:
        pass

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.stateful:
            return self.batches.sample()
        while True:
            if self._iter is None:
                self._iter = iter(self.batches)
            try:
                return next(self._iter)
            except StopIteration:  # a new epoch starts from a fresh state
                self._iter, self._state = None, None
                self.epoch += 1

    def loss(self, trainer: TrainerView) -> tuple[torch.Tensor, dict[str, int]]:
        """The mean loss of this process's next micro-batch, and what it read."""
        x, y = (t.to(trainer.device, non_blocking=True) for t in self._next_batch())
        with autocast(trainer.device, trainer.precision):
            state = (self._state,) if self.stateful else ()
            out = trainer.forward(x, *state, compute_logits=False)  # hidden states (B, T, D)
            loss = lm_loss(trainer.model.head, out.hidden, y, fused=trainer.config.fused_loss)
        if self.stateful:
            self._state = trainer.model.detach_state(out.state)
        return loss, {"tokens": y.numel()}

    def step_record(self, loss: float) -> dict[str, Any]:
        return {"ppl": math.exp(min(loss, 50))}

    @staticmethod
    def stride(config: Any) -> int:
        """The evaluation stride of a model without carried state: half its window by default."""
        return config.eval_stride or max(1, config.seq_len // 2)

    def eval_method(self, config: Any) -> str:
        if self.stateful:
            return "the hidden state carried through the whole split, every token scored once"
        return (f"sliding windows of {config.seq_len} tokens, stride {self.stride(config)}: every token scored once, "
                f"each after at least {config.seq_len - self.stride(config)} tokens of context")

    def validates_in_part(self, trainer: TrainerView) -> bool:
        """Whether periodic validations score only the start of the validation split (`val_tokens`)."""
        n = trainer.config.val_tokens
        return n is not None and self.data.valid.numel() > n + 1

    @torch.inference_mode()
    def evaluate(self, trainer: TrainerView, split: str, whole: bool = False) -> dict[str, Any]:
        """Mean per-token loss over the split, perplexity and word-level perplexity. Every target
        of the split is scored once, by both families: an RNN carries its state through the
        split; a model of fixed context reads sliding windows (`strided_windows`), so that each
        token it scores has at least `seq_len - stride` tokens of context. With `val_tokens` set,
        the validation split is scored on its first `val_tokens` targets unless `whole`."""
        model, c = trainer.model, trainer.config
        model.eval()
        stream = self.data.split(split)
        if split == "valid" and not whole and self.validates_in_part(trainer):
            stream = stream[: c.val_tokens + 1]  # N targets
        nll, count, state = 0.0, 0, None
        if self.stateful:  # one row, so that the state runs unbroken through the split; long windows (no
            # gradient is kept, so the window is only how often the output layer runs)
            windows = ((x, y, y.size(1)) for x, y in BPTTBatches(stream[None, :], max(c.seq_len, 512)))
        else:
            windows = strided_windows(stream, c.seq_len, self.stride(c), c.eval_batch_size)
        for x, y, scored in windows:
            x, y = x.to(trainer.device), y[:, -scored:].to(trainer.device)
            with autocast(trainer.device, trainer.precision):
                out = model(x, state, compute_logits=False) if self.stateful else model(x, compute_logits=False)
                nll += lm_loss(model.head, out.hidden[:, -scored:], y, reduction="sum").item()
            state = out.state if self.stateful else None
            count += y.numel()
        loss = nll / max(count, 1)
        word_loss = loss / self.data.words_per_token[split]
        return {"loss": loss, "ppl": math.exp(min(loss, 50)), "word_ppl": math.exp(min(word_loss, 50)),
                "tokens": count}

    def eval_record(self, split: str, result: dict[str, Any]) -> dict[str, Any]:
        p = "val" if split == "valid" else split
        return {f"{p}_loss": result["loss"], f"{p}_ppl": result["ppl"], f"{p}_word_ppl": result["word_ppl"]}

    def selection_value(self, result: dict[str, Any]) -> float:
        return result["loss"]

    def train_flops_per_token(self, trainer: TrainerView) -> float:
        """labkit.models.output.train_flops_per_token on the training stream, computed once."""
        if not hasattr(self, "_train_fpt"):
            self._train_fpt = train_flops_per_token(trainer.model, trainer.config.seq_len, self.data.train)
        return self._train_fpt

    def unigram_val_ppl(self) -> float:
        """The validation perplexity of a unigram model: each token's frequency in the training text
        (add-one smoothed, so that a token never seen in training costs a finite amount). The level a
        language model must get below to have learned more than word counts (labkit.inspect.quality)."""
        if not hasattr(self, "_unigram_ppl"):
            vocab = self.data.tokenizer.vocab_size
            counts = torch.bincount(self.data.train, minlength=vocab).double() + 1
            logp = counts.log() - counts.sum().log()
            targets = self.data.valid[1:]  # the targets an evaluation scores
            self._unigram_ppl = math.exp(min(-logp[targets].mean().item(), 50)) if targets.numel() else math.inf
        return self._unigram_ppl

    def card(self, trainer: TrainerView, best: float, test: dict[str, Any] | None,
             val_full: dict[str, Any] | None = None) -> dict[str, Any]:
        """The language model's part of the card. With `val_full` (the whole validation split, scored
        once at the end when periodic validations read part of it) the best_val figures are the whole
        split's for the weights kept, and the part's best is `best_val_*_part`."""
        model = trainer.model
        flops = self.train_flops_per_token(trainer) * trainer.tokens_seen
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(trainer.precision, torch.float32)
        peak = matmul_peak(trainer.device, dtype)
        card = {"family": model.config.family, "flops_per_token": model.flops_per_token(trainer.config.seq_len),
                "train_flops": flops, "matmul_peak_flops": peak,
                "mfu": flops / trainer.elapsed / peak if trainer.elapsed and peak else None,
                "epochs": self.epoch, "eval_method": self.eval_method(trainer.config),
                "best_val_loss": best if math.isfinite(best) else None,
                "best_val_ppl": math.exp(min(best, 50)) if math.isfinite(best) else None,
                "unigram_val_ppl": self.unigram_val_ppl()}
        if self.validates_in_part(trainer):
            card["val_tokens"] = trainer.config.val_tokens
        if val_full:
            card.update(best_val_loss_part=card["best_val_loss"], best_val_ppl_part=card["best_val_ppl"],
                        best_val_loss=val_full["loss"], best_val_ppl=val_full["ppl"],
                        best_val_word_ppl=val_full["word_ppl"], val_full_tokens=val_full["tokens"])
        if test:
            card.update(test_loss=test["loss"], test_ppl=test["ppl"], test_word_ppl=test["word_ppl"],
                        test_tokens=test["tokens"])
        return card

    def state_dict(self, trainer: TrainerView) -> dict[str, Any]:
        """The data position and the RNN state: the same whatever the number of processes (the
        state is gathered into the whole batch's)."""
        state = {"batches": self.batches.state_dict(), "epoch": self.epoch, "rnn_state": None}
        if self._state is not None:
            s = self._state if isinstance(self._state, tuple) else (self._state,)
            # (layers, B, H): each rank holds its rows of B
            state["rnn_state"] = [trainer.dist.gather_rows(t.detach(), dim=1).cpu() for t in s]
        return state

    def load_state_dict(self, trainer: TrainerView, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state["batches"])
        self.epoch = int(state["epoch"])
        self._iter = None
        if state["rnn_state"]:
            whole = state["rnn_state"]  # [(layers, B, H)]: the global batch's
            if any(t.dim() != 3 or t.size(1) != trainer.config.batch_size for t in whole):
                raise ValueError("the RNN state does not match the batch size")
            s = [t[:, trainer.rows].to(trainer.device) for t in whole]  # this process's rows
            self._state = tuple(s) if len(s) == 2 else s[0]
