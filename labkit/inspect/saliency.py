"""Which input tokens does a prediction depend on? Saliency maps, for both model families.

Attention shows where a Transformer's heads *look*; an RNN has no attention to show. Saliency
asks the same question of any model, from the outside, for one next-token prediction: with
f = log P(target | tokens 0..t),

- gradient x input: for each input position s <= t, the gradient of f with respect to token s's
  embedding vector e_s, dotted with e_s: sum_i e_s,i * df/de_s,i. A first-order estimate of how
  much f would change if token s's embedding were removed (scaled to zero); positive when the
  token pushes the prediction up. Cheap: one backward pass explains every position.
- occlusion: replace token s by a neutral token (`<unk>`) and measure the drop in f:
  f(original) - f(token s occluded). Exact for that change, but one forward pass per position.

`saliency` computes one row per prediction, the way an attention map has one row per query: row t
explains the prediction made after reading tokens 0..t (of the text's next token; at the last row,
of the model's top guess, or of a target you choose). Its `shares()` (|score| / sum of |score| per
row) draw in the same heatmap style as attention (labkit.inspect.plots.position_maps_figure).

The token embeddings are read, and differentiated at, through the models' `embed` hook point
(labkit.models.hooks.gradient_at). Saliency is a local, first-order view: a small score does not
prove a token is unused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from labkit.errors import LabkitError
from labkit.inspect.attention import MAX_TOKENS
from labkit.inspect.inputs import encode_text
from labkit.inspect.running import device_of, eval_mode, log_probs_at, require_lm, target_log_probs
from labkit.models.hooks import gradient_at

METHODS = ("gradient", "occlusion")


@dataclass
class SaliencyMap:
    tokens: list[str]
    ids: list[int]
    scores: np.ndarray  # (T, T): row t = the prediction after tokens 0..t, column s = input token s; 0 for s > t
    targets: list[int]  # the token each row explains
    target_tokens: list[str]
    method: str  # "gradient" (gradient x input) or "occlusion" (drop in log-probability, nats)
    total_tokens: int  # before any cut
    notices: list[str] = field(default_factory=list)

    def shares(self) -> np.ndarray:
        """(T, T): |score| divided by its row's sum, so that rows add up to 1 like attention."""
        size = np.abs(self.scores)
        sums = size.sum(-1, keepdims=True)
        return np.divide(size, sums, out=np.zeros_like(size), where=sums > 0)


def gradient_x_input(model: nn.Module, ids: Sequence[int], targets: Sequence[int]) -> np.ndarray:
    """(T, T) gradient x input: row t, column s <= t is e_s . d log P(targets[t] | ids[:t+1]) / d e_s.

    The text is copied T times into one batch and row t of the batch is asked only about its own
    prediction t, so that one backward pass gives every row (the rows do not interact)."""
    model = require_lm(model, "saliency")
    T = len(ids)
    x = torch.tensor([list(ids)] * T, device=device_of(model))  # (T, T): batch row t explains position t
    # cuDNN's RNN has no backward pass in eval mode; the plain kernels do.
    with eval_mode(model), torch.enable_grad(), torch.backends.cudnn.flags(enabled=False), \
            gradient_at(model, "hook_embed") as embedded:
        hidden = model(x, compute_logits=False).hidden  # (T, T, D)
        rows = torch.arange(T, device=x.device)
        log_probs = F.log_softmax(model.logits(hidden[rows, rows]).float(), dim=-1)  # (T, V)
        grad = embedded.grad(log_probs[rows, torch.as_tensor(list(targets), device=x.device)].sum())  # (T, T, E)
    scores = (grad * embedded.value).sum(-1).float()  # (T, T)
    return torch.tril(scores).cpu().numpy()


def occlusion(model: nn.Module, ids: Sequence[int], targets: Sequence[int], replacement: int) -> np.ndarray:
    """(T, T) occlusion: row t, column s <= t is log P(targets[t] | ids[:t+1]) minus the same with
    token s replaced by `replacement`. One batch: the text, then T copies each with one token replaced."""
    T = len(ids)
    x = torch.tensor([list(ids)] * (T + 1))  # (T + 1, T): row 0 unchanged, row s + 1 without token s
    x[torch.arange(1, T + 1), torch.arange(T)] = replacement
    log_p = target_log_probs(model, x, torch.tensor(list(targets)).expand(T + 1, T))  # (T + 1, T)
    drop = log_p[0][None, :] - log_p[1:]  # (S, T): occluded position s, prediction t
    return torch.tril(drop.T).double().numpy()  # (T, S)


def _target_id(tokenizer: Any, target: str | int) -> int:
    if isinstance(target, int):
        if not 0 <= target < tokenizer.vocab_size:
            raise LabkitError(f"target id {target} is outside the vocabulary (0..{tokenizer.vocab_size - 1})")
        return target
    ids = tokenizer.encode(target)
    if len(ids) != 1:
        raise LabkitError(f"the target {target!r} is {len(ids)} tokens; choose a single token")
    return ids[0]


def saliency(model: nn.Module, tokenizer: Any, text: str, *, method: str = "gradient",
             position: int | None = None, target: str | int | None = None,
             max_tokens: int = MAX_TOKENS) -> SaliencyMap:
    """Saliency of every next-token prediction on `text` (cut to `max_tokens` and the context).

    Row t explains the prediction of the text's token t + 1; the last row, the model's top guess.
    `target` (a token or an id) replaces the token explained at row `position` (default: the last
    row; negative counts from the end), say "runs" after "the dog near the cats"."""
    if method not in METHODS:
        raise LabkitError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    require_lm(model, "saliency")
    ids, total, notices = encode_text(model, tokenizer, text, max_tokens, "the same cut as the attention views")
    T = len(ids)
    guess = int(log_probs_at(model, [ids], [[T - 1]], tokenizer.pad_id)[0][0].argmax())
    targets = [*ids[1:], guess]
    if target is not None:
        row = T - 1 if position is None else position
        if not -T <= row < T:
            raise LabkitError(f"position {row} is outside the {T} tokens")
        targets[row] = _target_id(tokenizer, target)
    if method == "gradient":
        scores = gradient_x_input(model, ids, targets)
    else:
        neutral = tokenizer.unk_id if tokenizer.unk_id is not None else tokenizer.pad_id
        scores = occlusion(model, ids, targets, neutral)
    return SaliencyMap([str(t) for t in tokenizer.id_to_token(ids)], ids, scores, targets,
                       [str(t) for t in tokenizer.id_to_token(targets)], method, total, notices)
