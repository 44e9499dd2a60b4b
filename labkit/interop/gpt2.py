"""GPT-2's parameter names and layouts against labkit's Transformer (labkit.models.transformer).

Both are the same pre-LayerNorm GPT, part for part:

    labkit                      GPT-2 (Hugging Face, nanoGPT)
    tok_embed, pos_embed        wte, wpe
    blocks.{i}.ln1, ln2         h.{i}.ln_1, ln_2
    blocks.{i}.attn.qkv, proj   h.{i}.attn.c_attn, c_proj   (queries, keys, values side by side, as labkit)
    blocks.{i}.mlp.fc, proj     h.{i}.mlp.c_fc, c_proj
    ln_f, head                  ln_f, lm_head                (head tied to tok_embed, or not)

Only the layout of the linear layers' weights differs: torch's nn.Linear (labkit, nanoGPT) keeps
(out, in), Hugging Face's Conv1D keeps (in, out), so those are transposed on the way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from labkit.errors import LabkitError
from labkit.interop.weights import Tensors
from labkit.models import TransformerConfig

LAYER_PARTS = {"ln1": "ln_1", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "ln2": "ln_2",
               "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}
LINEAR = {"attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"}
TOP = {"tok_embed.weight": "wte.weight", "pos_embed.weight": "wpe.weight", "ln_f.weight": "ln_f.weight",
       "ln_f.bias": "ln_f.bias", "head.weight": "lm_head.weight"}
MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)$")  # the causal mask some writers saved
BLOCK = re.compile(r"blocks\.(\d+)\.(.+)\.(weight|bias)$")


@dataclass
class Checkpoint:
    """A foreign checkpoint read for import: the labkit model config, the tensors (not yet read)
    and how they map, and what it came from (the run config's `source` section)."""
    config: TransformerConfig
    tensors: Tensors
    conv1d: bool  # linear weights stored (in, out), as Hugging Face's Conv1D does
    zero_biases: bool  # no biases in the file: zeros compute the same
    source: dict[str, Any]


def gpt2_name(name: str) -> tuple[str, bool]:
    """A labkit parameter name -> its GPT-2 name (without `transformer.`) and whether it is a
    linear layer's weight (stored transposed by Hugging Face)."""
    if name in TOP:
        return TOP[name], False
    m = BLOCK.fullmatch(name)
    if not m or m[2] not in LAYER_PARTS:
        raise LabkitError(f"labkit parameter {name} has no GPT-2 counterpart")
    return f"h.{m[1]}.{LAYER_PARTS[m[2]]}.{m[3]}", m[2] in LINEAR and m[3] == "weight"


def canonical(name: str) -> str:
    """A checkpoint's tensor name without the prefixes its writer added: `_orig_mod.` (a compiled
    nanoGPT model), `transformer.` (GPT2LMHeadModel's body)."""
    for prefix in ("_orig_mod.", "transformer."):
        name = name.removeprefix(prefix)
    return name


def to_gpt2(model: nn.Module) -> dict[str, torch.Tensor]:
    """A labkit TransformerLM's weights under GPT2LMHeadModel's names and layouts (fp32,
    contiguous); a tied output layer is left out, as Hugging Face saves it."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "head.weight" and model.config.tie_weights:
            continue
        theirs, linear = gpt2_name(name)
        tensor = tensor.detach().float()
        prefix = "" if theirs == "lm_head.weight" else "transformer."
        out[prefix + theirs] = (tensor.t() if linear else tensor).contiguous()
    return out


def from_gpt2(expected: dict[str, torch.Tensor], tensors: Tensors, *, conv1d: bool, tied: bool,
              zero_biases: bool = False) -> dict[str, torch.Tensor]:
    """labkit's state dict from a GPT-2 checkpoint's tensors. `expected`: the labkit model's state
    dict (shapes only: it may live on the meta device); `conv1d`: linear weights stored (in, out);
    `zero_biases`: a model without biases (nanoGPT's bias=False) gets zeros, which compute the same."""
    names = {canonical(n): n for n in tensors.names()}
    wanted = {ours: gpt2_name("tok_embed.weight" if tied and ours == "head.weight" else ours) for ours in expected}
    known = {theirs for theirs, _ in wanted.values()} | ({"lm_head.weight"} if tied else set())
    unexpected = sorted(n for n in names if n not in known and not MASK_BUFFER.fullmatch(n))
    if unexpected:
        raise LabkitError(f"{tensors.label} holds tensors a GPT-2 language model does not have "
                          f"({', '.join(unexpected[:4])}{', ...' if len(unexpected) > 4 else ''})")
    missing = sorted(theirs for theirs, _ in wanted.values()
                     if theirs not in names and not (zero_biases and theirs.endswith(".bias")))
    if missing:
        raise LabkitError(f"{tensors.label} lacks tensors of a GPT-2 model: {', '.join(missing[:4])}")
    state: dict[str, torch.Tensor] = {}
    read: dict[str, torch.Tensor] = {}  # a tied weight is read once
    for ours, (theirs, linear) in wanted.items():
        shape = tuple(expected[ours].shape)
        if theirs not in names:
            state[ours] = torch.zeros(shape)
            continue
        if theirs not in read:
            tensor = tensors.get(names[theirs])
            if not tensor.is_floating_point():
                raise LabkitError(f"{tensors.label}: {names[theirs]} holds {tensor.dtype}, not weights")
            tensor = tensor.t() if linear and conv1d else tensor
            if tuple(tensor.shape) != shape:
                raise LabkitError(f"{tensors.label}: {names[theirs]} has shape {tuple(tensor.shape)}, but its "
                                  f"config asks for {shape}")
            read[theirs] = tensor.to(torch.float32).contiguous()
        state[ours] = read[theirs]
    return state
