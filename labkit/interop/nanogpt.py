"""nanoGPT checkpoints (karpathy/nanoGPT train.py's `ckpt.pt`) read for import.

The file is `torch.save({"model": state_dict, "optimizer": ..., "model_args": {n_layer, n_head, n_embd,
block_size, bias, vocab_size, dropout}, "iter_num", "best_val_loss", "config"})`, loaded here with
`weights_only=True` (memory-mapped): anything in it beyond tensors and plain values is refused
unrun. The model is GPT-2's, with nn.Linear layouts, the exact GELU, and with bias=False no biases
at all (zeros compute the same). The tokenizer is not in the file (GPT-2's BPE through tiktoken,
or a character vocabulary in a pickled meta.pkl, which is never read): it is given separately.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from labkit.errors import LabkitError
from labkit.interop.gpt2 import Checkpoint, canonical
from labkit.interop.weights import load_torch_file, tensor_dict
from labkit.models import TransformerConfig

CKPT = "ckpt.pt"  # what nanoGPT's train.py writes into its out_dir
ARGS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")


def nanogpt_file(path: Path) -> Path | None:
    """The ckpt.pt that `path` is or holds, if any."""
    if path.is_file():
        return path
    return path / CKPT if (path / CKPT).is_file() else None


def plain(value: Any) -> Any:
    """A JSON-ready copy of a checkpoint's bookkeeping value (a one-element tensor becomes a number)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (bool, int, float, str)) or value is None else None


def read_nanogpt(file: Path) -> Checkpoint:
    data = load_torch_file(file)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict) or not isinstance(data.get("model_args"), dict):
        raise LabkitError(f"{file} is not a nanoGPT checkpoint: it has no 'model' state dict and 'model_args'")
    args = data["model_args"]
    absent = [k for k in ARGS if k not in args]
    if absent:
        raise LabkitError(f"{file}: model_args lacks {', '.join(absent)}: not a nanoGPT GPT checkpoint")
    tensors = tensor_dict(data["model"], file)
    names = {canonical(n): n for n in tensors.names()}
    fc = names.get("h.0.mlp.c_fc.weight")
    tied = "lm_head.weight" not in names or ("wte.weight" in names and torch.equal(
        tensors.get(names["lm_head.weight"]), tensors.get(names["wte.weight"])))
    config = TransformerConfig.from_dict({
        "vocab_size": args["vocab_size"], "d_model": args["n_embd"], "n_layers": args["n_layer"],
        "n_heads": args["n_head"], "context_length": args["block_size"], "dropout": args.get("dropout", 0.0),
        "d_ff": tensors.shape(fc)[0] if fc else 4 * args["n_embd"], "tie_weights": tied, "activation": "gelu"})
    train = data.get("config") if isinstance(data.get("config"), dict) else {}
    source = {"format": "nanogpt", "path": str(file.resolve()), "iter_num": plain(data.get("iter_num")),
              "best_val_loss": plain(data.get("best_val_loss")), "dataset": plain(train.get("dataset")),
              "model_args": {k: plain(v) for k, v in args.items()}}
    return Checkpoint(config, tensors, conv1d=False, zero_biases=args.get("bias", True) is False, source=source)
