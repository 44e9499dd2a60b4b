"""Surgery: switch a part of a model off and see, token by token, what it was doing.

Attention maps and saliency show where a model looks; switching a part off shows what that part
is *for*. `ablate` zeroes, during one forward pass, through the hook points of
labkit.models.hooks:

- heads: (layer, head) pairs of a Transformer: the head's output z (so it adds nothing to the
  residual stream);
- units: (layer, unit) of a layer's state: an RNN's h_t (the recurrence then reads the zero,
  so the later steps feel it too), or a Transformer's residual stream after that block;
- layers: a whole layer: an RNN layer's h_t, every unit at every step (an LSTM's cell state
  still runs); a Transformer block's writes to the residual stream (its attention and MLP
  outputs), as if the block were not there.

and returns the log-probability of every token of the text with and without the cut. The text is
read as the start of a line (after `<eos>`), as the training text presents it, so every token,
the first one too, is predicted.

`head_importance` ranks the heads of a Transformer by how much the mean next-token loss over some
texts rises when each is removed alone; `unit_importance` does the same for the units of one
layer. Both remove a part in many rows of one batch at once (a different part in each group of
rows), so ranking all the heads costs one forward pass per layer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from labkit.data.batching import pad_batch
from labkit.errors import LabkitError
from labkit.inspect.inputs import context_length, encode_text
from labkit.inspect.running import require_lm, target_log_probs
from labkit.models.hooks import HookFn, HookPoint, hooks, zero_head, zero_units

MAX_ROWS = 256  # rows of one ablation batch (groups of texts, each with its own part removed)


@dataclass
class TokenEffect:
    """Per predicted token: log P(token | <eos>, the tokens before it) in nats, with the parts in
    place and removed. `delta` = ablated - base: negative where the removed part helped."""

    tokens: list[str]  # the predicted tokens (the text's own)
    targets: list[int]
    base_logp: np.ndarray  # (T,)
    ablated_logp: np.ndarray  # (T,)
    delta: np.ndarray  # (T,)
    notices: list[str] = field(default_factory=list)

    @property
    def loss_increase(self) -> float:
        """How much the mean next-token loss (nats/token) rose: mean(base - ablated)."""
        return float(-self.delta.mean())


def _family(model: nn.Module) -> str:
    return "rnn" if model.carries_state else "transformer"


def _check(model: nn.Module, heads: Sequence[tuple[int, int]], units: Sequence[tuple[int, int]],
           layers: Sequence[int]) -> None:
    c = model.config
    if heads and _family(model) != "transformer":
        raise LabkitError("heads can be switched off in a Transformer only; for an RNN switch off units or layers")
    for layer, head in heads:
        if not (0 <= layer < c.n_layers and 0 <= head < c.n_heads):
            raise LabkitError(f"no head L{layer} H{head}: the model has {c.n_layers} layers of {c.n_heads} heads")
    width = model.width
    for layer, unit in units:
        if not (0 <= layer < c.n_layers and 0 <= unit < width):
            raise LabkitError(f"no unit {unit} in layer {layer}: the model has {c.n_layers} layers of {width} units")
    for layer in layers:
        if not 0 <= layer < c.n_layers:
            raise LabkitError(f"no layer {layer}: the model has {c.n_layers} (0..{c.n_layers - 1})")


def _zeros(value: torch.Tensor, point: HookPoint) -> torch.Tensor:
    return torch.zeros_like(value)


def _compose(fns: list[HookFn]) -> HookFn:
    """Several replacements at one point, applied in turn."""
    def run(value: torch.Tensor, point: HookPoint) -> torch.Tensor:
        for fn in fns:
            replaced = fn(value, point)
            value = value if replaced is None else replaced
        return value
    return run


def ablation_hooks(model: nn.Module, *, heads: Iterable[tuple[int, int]] = (), units: Iterable[tuple[int, int]] = (),
                   layers: Iterable[int] = ()) -> dict[str, HookFn]:
    """The `hooks` mapping that removes these heads, units and layers (see the module docstring)."""
    heads, units, layers = [tuple(h) for h in heads], [tuple(u) for u in units], list(layers)
    _check(model, heads, units, layers)
    by_point: dict[str, list[HookFn]] = defaultdict(list)
    per_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in heads:
        per_layer[layer].append(head)
    for layer, hs in per_layer.items():
        for name, fn in zero_head(layer, hs).items():
            by_point[name].append(fn)
    per_layer = defaultdict(list)
    for layer, unit in units:
        per_layer[layer].append(unit)
    for layer, us in per_layer.items():
        for name, fn in zero_units(model, layer, us).items():
            by_point[name].append(fn)
    for layer in layers:
        names = ([f"layers.{layer}.hook_hidden"] if model.carries_state
                 else [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out"])
        for name in names:
            by_point[name].append(_zeros)
    return {name: _compose(fns) for name, fns in by_point.items()}


def _read(model: nn.Module, tokenizer: Any, text: str, max_tokens: int | None) -> tuple[list[int], list[str]]:
    context = context_length(model)
    caps = [n for n in (max_tokens, context and context - 1) if n]
    ids, _, notices = encode_text(model, tokenizer, text, min(caps, default=None), "the limit asked for")
    return ids, notices


def ablate(model: nn.Module, tokenizer: Any, text: str, *, heads: Iterable[tuple[int, int]] = (),
           units: Iterable[tuple[int, int]] = (), layers: Iterable[int] = (),
           max_tokens: int | None = None) -> TokenEffect:
    """Log-probability of every token of `text`, with and without the given heads, units and layers
    (at once). Raises `EmptyInput` when the text has no tokens."""
    require_lm(model, "surgery")
    fns = ablation_hooks(model, heads=heads, units=units, layers=layers)
    ids, notices = _read(model, tokenizer, text, max_tokens)
    inputs, targets = torch.tensor([[tokenizer.eos_id, *ids[:-1]]]), torch.tensor([ids])  # (1, T)
    base = target_log_probs(model, inputs, targets)[0].double().numpy()
    with hooks(model, fns):
        ablated = target_log_probs(model, inputs, targets)[0].double().numpy()
    tokens = [str(t) for t in tokenizer.id_to_token(ids)]
    return TokenEffect(tokens, ids, base, ablated, ablated - base, notices)


def _batch(model: nn.Module, tokenizer: Any, texts: Sequence[str], max_tokens: int | None):
    """Padded (inputs, targets, mask), each (B, T): every text read after <eos>."""
    encoded = [_read(model, tokenizer, t, max_tokens)[0] for t in texts]
    if not encoded:
        raise LabkitError("give at least one text")
    inputs, _, mask = pad_batch([[tokenizer.eos_id, *ids[:-1]] for ids in encoded], tokenizer.eos_id)
    targets, _, _ = pad_batch(encoded, tokenizer.eos_id)
    return inputs, targets, mask


def _mean_losses(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                 groups: int, fns: dict[str, HookFn]) -> list[float]:
    """The mean loss over the masked tokens of each of `groups` copies of the batch, run as one."""
    reps = (groups, 1)
    with hooks(model, fns):
        logp = target_log_probs(model, inputs.repeat(reps), targets.repeat(reps))  # (groups * B, T)
    per_group = logp.view(groups, *inputs.shape).double()
    m = mask.double()
    return [float(-(g * m).sum() / m.sum()) for g in per_group]


def _row_groups(B: int, parts: list[int], zero: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]) -> HookFn:
    """A hook that, in row group k (rows k*B .. (k+1)*B - 1), zeroes part `parts[k]` via `zero`."""
    rows = torch.arange(len(parts) * B)
    which = torch.tensor(parts).repeat_interleave(B)

    def hook(value: torch.Tensor, point: HookPoint) -> torch.Tensor:
        value = value.clone()
        zero(value, rows.to(value.device), which.to(value.device))
        return value
    return hook


def head_importance(model: nn.Module, tokenizer: Any, texts: Sequence[str], *,
                    max_tokens: int | None = None) -> list[dict[str, Any]]:
    """Rows {"layer", "head", "loss_increase"}, largest first: the mean next-token loss (nats/token,
    over every token of `texts`) with that head alone removed, minus the loss with every head."""
    require_lm(model, "head importance")
    if _family(model) != "transformer":
        raise LabkitError("head importance needs a Transformer run; for an RNN rank its units (unit_importance)")
    inputs, targets, mask = _batch(model, tokenizer, texts, max_tokens)
    base = _mean_losses(model, inputs, targets, mask, 1, {})[0]
    B, H = inputs.size(0), model.config.n_heads

    def zero_head_rows(z: torch.Tensor, rows: torch.Tensor, which: torch.Tensor) -> None:
        z[rows, which] = 0.0  # (rows, nh, T, hs): each row's own head

    out = []
    for layer in range(model.config.n_layers):
        for start in range(0, H, max(1, MAX_ROWS // B)):
            chosen = list(range(start, min(H, start + max(1, MAX_ROWS // B))))
            fns = {f"blocks.{layer}.attn.hook_z": _row_groups(B, chosen, zero_head_rows)}
            losses = _mean_losses(model, inputs, targets, mask, len(chosen), fns)
            out += [{"layer": layer, "head": h, "loss_increase": loss - base} for h, loss in zip(chosen, losses)]
    return sorted(out, key=lambda r: -r["loss_increase"])


def unit_importance(model: nn.Module, tokenizer: Any, texts: Sequence[str], layer: int, *, top: int = 20,
                    max_tokens: int | None = None) -> list[dict[str, Any]]:
    """The `top` units of `layer` whose removal alone raises the mean next-token loss most: rows
    {"layer", "unit", "loss_increase"}, largest first. An RNN's h_t units (every step), or a
    Transformer's residual stream after that block."""
    require_lm(model, "unit importance")
    _check(model, (), [(layer, 0)], ())
    inputs, targets, mask = _batch(model, tokenizer, texts, max_tokens)
    base = _mean_losses(model, inputs, targets, mask, 1, {})[0]
    B, width = inputs.size(0), model.width
    name = f"layers.{layer}.hook_hidden" if model.carries_state else f"blocks.{layer}.hook_resid_post"

    def zero_unit_rows(value: torch.Tensor, rows: torch.Tensor, which: torch.Tensor) -> None:
        if value.dim() == 2:  # one step of the recurrence: (rows, H)
            value[rows, which] = 0.0
        else:  # (rows, T, C)
            value[rows, :, which] = 0.0

    out = []
    per_call = max(1, MAX_ROWS // B)
    for start in range(0, width, per_call):
        chosen = list(range(start, min(width, start + per_call)))
        losses = _mean_losses(model, inputs, targets, mask, len(chosen), {name: _row_groups(B, chosen, zero_unit_rows)})
        out += [{"layer": layer, "unit": u, "loss_increase": loss - base} for u, loss in zip(chosen, losses)]
    return sorted(out, key=lambda r: -r["loss_increase"])[:top]
