"""Named hook points inside both model families: read any activation by name, or replace it.

In the spirit of TransformerLens, the models pass their intermediate values through `HookPoint`s,
identity modules without parameters (state dicts do not change). A point's name is its path in
`model.named_modules()`, and its last part begins with `hook_`, as in TransformerLens: a point
never shares a name with a layer or a method (`embed` is the embedding layer, `hook_embed` what
it outputs). Forward hooks on a point see its value; a hook that returns a tensor replaces the
value, so the rest of the forward pass computes with the replacement. Every viewer (attention
maps, induction scores, saliency) reads activations this way.

Shapes: B batch, T new positions, S keys seen (the cached prefix plus T), C d_model, nh heads,
hs = C / nh, E d_embed, H d_hidden, V vocabulary.

Transformer:
    hook_embed                    (B, T, C)      token embeddings
    blocks.{i}.hook_resid_pre     (B, T, C)      residual stream into block i; block 0: token +
                                                 position embedding, after dropout
    blocks.{i}.attn.hook_pattern  (B, nh, T, S)  softmax weights, row t over the keys it may see
    blocks.{i}.attn.hook_z        (B, nh, T, hs) each head's output before the output projection
                                                 (zero z[:, h] and head h is switched off)
    blocks.{i}.hook_attn_out      (B, T, C)      what attention adds to the stream (projected, dropout)
    blocks.{i}.hook_resid_mid     (B, T, C)      after the attention, before the MLP
    blocks.{i}.hook_mlp_out       (B, T, C)      what the MLP adds to the stream
    blocks.{i}.hook_resid_post    (B, T, C)      out of block i
    hook_final                    (B, T, C)      after the final LayerNorm: the output layer's input
    hook_logits                   (B, T, V)
RNN (rnn_tanh, rnn_relu, lstm, gru):
    hook_embed                    (B, T, E)      the embedding layer's output
    layers.{i}.hook_hidden        (B, H) a step  h_t of layer i
    layers.{i}.hook_cell          (B, H) a step  c_t (LSTM)
    layers.{i}.hook_gate_input|forget|candidate|output  (B, H) a step   (LSTM: i, f, g, o)
    layers.{i}.hook_gate_reset|update|candidate         (B, H) a step   (GRU: r, z, n)
    hook_final                    (B, T, H)      top layer's output after dropout: the output layer's input
    hook_logits                   (B, T, V)

Code written for the names before the `hook_` prefix (`blocks.0.attn.pattern`, `layers.0.hidden`,
`final`) gets an error that names the point as it is called now (`renamed`). No saved file holds
a point's name (the recorder keeps arrays by layer), so nothing on disk needs migrating.

torch's fused RNN kernels hide the per-layer states and the gates, so while any hook sits under
`layers.` the RNN runs its recurrence spelled out step by step (same weights, same result); the
points there are called once per step with `point.step = t`, and `run_with_cache` stacks the steps
into (B, T, H). A replacement takes effect in the recurrence: the next step and layer read it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from labkit.errors import LabkitError
from labkit.models.output import LMOutput

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]  # (value, point) -> replacement or None
Names = str | Iterable[str] | Callable[[str], bool] | None  # exact names, fnmatch globs, or a predicate


class HookPoint(nn.Module):
    """The identity, at a named place in a model: hooks registered on it read or replace the value."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None  # its path in the model, set by `hook_points`
        self.step: int | None = None  # the time step t while an RNN's recurrence calls it, else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """Every point in `model` by name (and each point is told its name)."""
    points = {name: m for name, m in model.named_modules() if isinstance(m, HookPoint)}
    for name, point in points.items():
        point.name = name
    return points


def has_hooks(module: nn.Module) -> bool:
    """Does a forward hook sit on `module` or anything inside it? (Decides the models' slow paths.)"""
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def select(names: Iterable[str], wanted: Names) -> list[str]:
    """The names that `wanted` picks: all when None, else exact names, globs or a predicate."""
    names = list(names)
    if wanted is None:
        return names
    if callable(wanted):
        return [n for n in names if wanted(n)]
    patterns = [wanted] if isinstance(wanted, str) else list(wanted)
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


# the names before the hook_ prefix -> today's (the first rule that matches a name applies)
_RENAMED = ((r"(^|\.)attn\.(pattern|z)$", r"\1attn.hook_\2"), (r"(^|\.)(attn|mlp)\.out$", r"\1hook_\2_out"),
            (r"(^|\.)gates\.([\w*?]+)$", r"\1hook_gate_\2"),
            (r"(^|\.)(embed|final|logits|resid_pre|resid_mid|resid_post|hidden|cell)$", r"\1hook_\2"))


def renamed(name: str) -> str | None:
    """A point's name (or glob) as written before the `hook_` prefix, in today's words, or None
    when it is not such a name: "blocks.*.attn.pattern" -> "blocks.*.attn.hook_pattern"."""
    for old, new in _RENAMED:
        if re.search(old, name):
            return re.sub(old, new, name)
    return None


def _no_point(points: dict[str, HookPoint], pattern: str) -> LabkitError:
    now = renamed(pattern)
    if now is not None and select(points, now):
        return LabkitError(f"no hook point matches {pattern!r}: hook points are named hook_* now "
                           f"(as in TransformerLens); use {now!r}")
    shown = ", ".join(list(points)[:12]) + (", ..." if len(points) > 12 else "")
    return LabkitError(f"no hook point matches {pattern!r}; this model has: {shown}")


@contextlib.contextmanager
def hooks(model: nn.Module, fns: Mapping[str, HookFn]) -> Iterator[nn.Module]:
    """Within the block, each fn(value, point) runs at the points its name or glob matches; a
    tensor it returns replaces the value. The hooks are removed on leaving, also on an error."""
    points = hook_points(model)
    handles = []
    try:
        for pattern, fn in fns.items():
            chosen = select(points, pattern)
            if not chosen:
                raise _no_point(points, pattern)
            handles += [points[n].register_forward_hook(_forward_hook(fn)) for n in chosen]
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _forward_hook(fn: HookFn) -> Callable[[nn.Module, Any, torch.Tensor], torch.Tensor | None]:
    def hook(point: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        return fn(output, point)  # type: ignore[arg-type]
    return hook


class ActivationCache(dict[str, torch.Tensor]):
    """Activations by point name, as `run_with_cache` recorded them."""

    def stack(self, kind: str) -> torch.Tensor:
        """One kind of point over the layers, bottom first: "attn.hook_pattern" -> (layers, B, nh, T, S),
        "hook_resid_post" -> (layers, B, T, C), "hook_hidden" (RNN) -> (layers, B, T, H)."""
        found = {}
        for name in self:
            m = re.fullmatch(rf"(?:.+\.)?(?:blocks|layers)\.(\d+)\.{re.escape(kind)}", name)
            if m:
                found[int(m.group(1))] = self[name]
        if not found:
            now = renamed(f"blocks.0.{kind}")
            hint = f"; points are named hook_* now: {now.removeprefix('blocks.0.')!r}" if now else ""
            raise KeyError(f"no cached point of kind {kind!r} (cached: {', '.join(self) or 'none'}){hint}")
        return torch.stack([found[i] for i in sorted(found)])


def run_with_cache(model: nn.Module, ids: torch.Tensor, *, names: Names = None, state: Any = None,
                   detach: bool = True, **forward_kwargs: Any) -> tuple[LMOutput, ActivationCache]:
    """Run `model(ids, state, **forward_kwargs)` once and keep the value of every point that
    `names` picks (None: all). Returns (the LMOutput, the cache); steps of an RNN's recurrence are
    stacked along time into (B, T, H). Values are detached unless `detach` is False."""
    kept: dict[str, torch.Tensor | list[torch.Tensor]] = {}

    def keep(value: torch.Tensor, point: HookPoint) -> None:
        value = value.detach() if detach else value
        if point.step is None:
            kept[point.name] = value
        else:
            kept.setdefault(point.name, []).append(value)  # type: ignore[union-attr]

    chosen = select(hook_points(model), names)
    with hooks(model, dict.fromkeys(chosen, keep)):
        out = model(ids, state, **forward_kwargs)
    cache = ActivationCache((n, torch.stack(v, 1) if isinstance(v, list) else v) for n, v in kept.items())
    return out, cache


class Leaf:
    """What a point saw during a forward pass, and a zero tensor added to it there that requires
    grad, so that d f / d (that zero) is the gradient of f with respect to the point's value. (Not
    the value cut from the graph and made a leaf: inside an RNN's recurrence the next step's leaf
    would then cut the path from h_t through the later steps, and give only h_t's direct effect.)"""

    def __init__(self) -> None:
        self.values: list[torch.Tensor] = []  # detached, one per call (per step in a recurrence)
        self.offsets: list[torch.Tensor] = []  # the zeros added, leaves that require grad
        self.per_step = False

    def _join(self, tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.stack(list(tensors), 1) if self.per_step else tensors[-1]

    @property
    def value(self) -> torch.Tensor:
        """The point's value, detached (per-step values stacked into (B, T, ...))."""
        return self._join(self.values)

    def grad(self, scalar: torch.Tensor) -> torch.Tensor:
        """d scalar / d value, shaped like `value`: through everything computed from the value."""
        return self._join(torch.autograd.grad(scalar, self.offsets, allow_unused=True, materialize_grads=True))


@contextlib.contextmanager
def gradient_at(model: nn.Module, name: str) -> Iterator[Leaf]:
    """Within the block, the value at point `name` is recorded and gets a zero leaf added, so
    that `leaf.grad(f)` is the gradient, with respect to the value, of a scalar f computed from
    the forward pass. Gradients must be on (torch.enable_grad; not inference_mode)."""
    points = hook_points(model)
    if name not in points:  # one exact name: a glob would mix several points' values
        raise _no_point(points, name)
    leaf = Leaf()

    def watch(value: torch.Tensor, point: HookPoint) -> torch.Tensor:
        offset = torch.zeros_like(value, requires_grad=True)
        leaf.values.append(value.detach())
        leaf.offsets.append(offset)
        leaf.per_step = point.step is not None
        return value + offset

    with hooks(model, {name: watch}):
        yield leaf


def _indices(items: int | Iterable[int] | None) -> slice | list[int]:
    if items is None:
        return slice(None)
    return [items] if isinstance(items, int) else list(items)


def zero_head(layer: int, head: int | Iterable[int], positions: int | Iterable[int] | None = None) -> dict[str, HookFn]:
    """For `hooks`: switch head `head` (or several) of block `layer` off by zeroing its z, at
    `positions` of the call only when given. (A dict holds one function per point: to switch off
    two heads of one layer, pass both here.)"""
    heads, where = _indices(head), _indices(positions)

    def zero(z: torch.Tensor, point: HookPoint) -> torch.Tensor:
        z = z.clone()
        for h in heads:
            z[:, h, where] = 0.0  # (B, nh, T, hs)
        return z

    return {f"blocks.{layer}.attn.hook_z": zero}


def zero_units(model: nn.Module, layer: int, units: int | Iterable[int],
               positions: int | Iterable[int] | None = None) -> dict[str, HookFn]:
    """For `hooks`: zero `units` of layer `layer`'s state, at `positions` (time steps) only when
    given. RNN: h_t of `layers.{layer}.hook_hidden`, which the recurrence then reads; Transformer: the
    residual stream after the block (`blocks.{layer}.hook_resid_post`). The model decides the name."""
    name = f"layers.{layer}.hook_hidden" if model.carries_state else f"blocks.{layer}.hook_resid_post"
    cols, where = _indices(units), _indices(positions)

    def zero(value: torch.Tensor, point: HookPoint) -> torch.Tensor | None:
        value = value.clone()
        if point.step is not None:  # one step of the recurrence: (B, H)
            if positions is not None and point.step not in where:
                return None
            value[:, cols] = 0.0
        elif positions is None:
            value[:, :, cols] = 0.0  # (B, T, D)
        else:
            value[:, torch.tensor(where)[:, None], torch.tensor(cols)] = 0.0
        return value

    return {name: zero}
