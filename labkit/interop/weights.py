"""The tensors of a checkpoint on disk, read one at a time so a large model is never held twice.

safetensors files (one, or the shards of an index) are memory-mapped; a torch file is read with
`torch.load(weights_only=True, mmap=True)`, which only ever rebuilds tensors and plain values: a
file that holds anything else (a pickled object whose loading would run code) is refused, unrun.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from labkit.atomic import MiB, check_archive, read_json_file
from labkit.errors import LabkitError


class Tensors:
    """Named tensors read on demand: from safetensors handles, or from a dict of (mapped) tensors."""

    def __init__(self, where: dict[str, Any], label: str):
        self._where = where  # name -> a safetensors handle, or the tensor itself
        self.label = label  # the file(s), for messages

    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        source = self._where[name]
        return tuple(source.shape) if isinstance(source, torch.Tensor) else tuple(source.get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        source = self._where[name]
        try:
            return source if isinstance(source, torch.Tensor) else source.get_tensor(name)
        except (SafetensorError, OSError) as e:
            raise LabkitError(f"{self.label}: cannot read {name} ({first_line(e)}): the file is damaged") from None


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def open_safetensors(files: list[Path]) -> Tensors:
    """The tensors of one or more safetensors files (a truncated or foreign file is refused here)."""
    where: dict[str, Any] = {}
    for path in files:
        try:
            handle = safe_open(str(path), framework="pt")
        except (SafetensorError, OSError) as e:
            raise LabkitError(f"{path} is not a readable safetensors file ({first_line(e)}); "
                              "it may be truncated: copy it again") from None
        where |= dict.fromkeys(handle.keys(), handle)
    return Tensors(where, ", ".join(str(p) for p in files))


def open_safetensors_index(index: Path) -> Tensors:
    """A sharded checkpoint: the index's weight_map names the shard of each tensor."""
    try:
        weight_map = read_json_file(index, 64 * MiB, "safetensors index")["weight_map"]
        shards = sorted({index.parent / str(name) for name in weight_map.values()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise LabkitError(f"{index} is not a safetensors index ({first_line(e)})") from None
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise LabkitError(f"{index} names shards that are not there: {', '.join(missing[:3])}")
    return open_safetensors(shards)


def load_torch_file(path: Path) -> Any:
    """`torch.load` that rebuilds tensors and plain values only, memory-mapped when the file allows;
    an archive that would inflate far beyond its size is refused first (`check_archive`)."""
    check_archive(path, "checkpoint")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # an old, non-zip file
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)|global:? (\S+)", str(e))
        what = f" ({next(g for g in found.groups() if g)})" if found else ""
        raise LabkitError(f"refusing {path}: it holds a pickled Python object{what}, not only tensors; "
                          "labkit never unpickles code (save the weights as plain tensors)") from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise LabkitError(f"{path} is not a readable torch checkpoint ({first_line(e)}); it may be "
                          "truncated: copy it again") from None


def tensor_dict(data: Any, path: Path) -> Tensors:
    """A state dict (name -> tensor) loaded from `path` as Tensors."""
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise LabkitError(f"{path} does not hold a state dict (names -> tensors)")
    return Tensors({str(k): v for k, v in data.items()}, str(path))
