"""A Hugging Face GPT-2 folder or a nanoGPT ckpt.pt made into a labkit run directory.

The run is like a trained one to everything that reads runs: config (model, a `train` section with
the evaluation window, a `data` section naming the corpus `labkit eval` scores it on, and `source`:
what it came from), tokenizer, best weights and a card that says "finished" and where it came
from. The model is built on torch's meta device and given the converted tensors directly, so the
memory it takes is the fp32 model once (said before anything is read); the run is written under a
temporary name and renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from labkit import __version__
from labkit.data.lm import DataConfig
from labkit.data.tokenizers import Tokenizer
from labkit.errors import LabkitError
from labkit.interop.folders import new_folder
from labkit.interop.gpt2 import MASK_BUFFER, Checkpoint, canonical, from_gpt2
from labkit.interop.hf import hf_names, is_hf_folder, read_hf
from labkit.interop.nanogpt import nanogpt_file, read_nanogpt
from labkit.interop.tokenizer import pad_vocabulary, read_tokenizer
from labkit.models import build_model, count_parameters
from labkit.runs import RunDir

LOGITS_BUDGET = 2**26  # floats of one evaluation batch's logits (256 MB): sets eval_batch_size


def read_checkpoint(path: Path, tokenizer: str | Path | None) -> tuple[Checkpoint, Tokenizer]:
    """The checkpoint at `path` and its tokenizer (`tokenizer`, else the one in a Hugging Face folder)."""
    if not path.exists():
        raise LabkitError(f"{path} does not exist")
    if is_hf_folder(path):
        checkpoint = read_hf(path)
        tok = read_tokenizer(tokenizer or path)
    elif (file := nanogpt_file(path)) is not None:
        if tokenizer is None:
            raise LabkitError("a nanoGPT checkpoint holds no tokenizer: give --tokenizer PATH (GPT-2's Hugging Face "
                              "tokenizer file or folder, or a labkit run's tokenizer); a meta.pkl is a pickle and "
                              "is never read")
        checkpoint = read_nanogpt(file)
        tok = read_tokenizer(tokenizer)
    else:
        raise LabkitError(f"{path} is neither a Hugging Face GPT-2 folder (it has no {hf_names()['config']}) "
                          "nor a nanoGPT ckpt.pt")
    check_sizes(checkpoint, str(path))  # before anything is made at the sizes the config states
    return checkpoint, pad_vocabulary(tok, checkpoint.config.vocab_size, str(path))


def check_sizes(checkpoint: Checkpoint, where: str) -> None:
    """The config's sizes (vocabulary, context, width, layers) must be those of the tensors in the file:
    a config.json (or nanoGPT's model_args) that says a vocabulary of 10^12 is refused here, from the
    tensors' headers, before a tokenizer or a model is grown to it."""
    shapes = {canonical(n): tuple(checkpoint.tensors.shape(n)) for n in checkpoint.tensors.names()}
    c = checkpoint.config
    for name, shape in (("wte.weight", (c.vocab_size, c.d_model)), ("wpe.weight", (c.context_length, c.d_model))):
        if shapes.get(name) != shape:
            raise LabkitError(f"{where}: its config says {name} is {shape[0]:,} x {shape[1]:,} but the file holds "
                              f"{' x '.join(f'{n:,}' for n in shapes[name]) if name in shapes else 'no such tensor'}: "
                              "the config and the weights do not belong together")
    layers = {int(m.group(1)) for n in shapes if (m := re.match(r"h\.(\d+)\.", n))}
    if layers != set(range(c.n_layers)):
        raise LabkitError(f"{where}: its config says {c.n_layers:,} layers but the file holds {len(layers):,}: the "
                          "config and the weights do not belong together")


def parameter_count(checkpoint: Checkpoint) -> int:
    """Parameters in the file (tied weights once, mask buffers not at all), from the headers alone."""
    names = [n for n in checkpoint.tensors.names() if not MASK_BUFFER.fullmatch(canonical(n))]
    if checkpoint.config.tie_weights:
        names = [n for n in names if canonical(n) != "lm_head.weight"]
    return sum(math.prod(checkpoint.tensors.shape(n)) for n in names)


def build(checkpoint: Checkpoint) -> torch.nn.Module:
    """The labkit model holding the checkpoint's weights (in fp32, read once)."""
    with torch.device("meta"):  # no memory: the tensors read from the file become the parameters
        model = build_model(checkpoint.config)
    state = from_gpt2(model.state_dict(), checkpoint.tensors, conv1d=checkpoint.conv1d,
                      tied=checkpoint.config.tie_weights, zero_biases=checkpoint.zero_biases)
    model.load_state_dict(state, assign=True)
    if checkpoint.config.tie_weights:
        model.head.weight = model.tok_embed.weight  # one parameter again, as a trained run has it
    return model.eval()


def run_config(checkpoint: Checkpoint, tokenizer: Tokenizer, corpus: str, tokenizer_path: Any) -> dict[str, Any]:
    c = checkpoint.config
    data = DataConfig(corpus=corpus, tokenizer=tokenizer.kind, vocab_size=tokenizer.vocab_size)
    # TrainConfig's defaults for the rest (labkit.train sits beside this package, not below it); scored in
    # fp32 as its source computes it (pass --precision to train it further in bf16)
    train = {"seq_len": c.context_length, "precision": "fp32",
             "eval_batch_size": max(1, min(10, LOGITS_BUDGET // (c.context_length * c.vocab_size)))}
    source = checkpoint.source | {"tokenizer": str(Path(tokenizer_path).resolve()) if tokenizer_path else None}
    return {"kind": "lm", "labkit_version": __version__, "model": c.to_dict(), "train": train,
            "data": data.to_dict(), "source": source, "init_from": None}


def import_checkpoint(path: str | Path, out: str | Path, *, tokenizer: str | Path | None = None,
                      corpus: str = "wikitext-2", say: Callable[[str], None] = lambda _: None) -> Path:
    """Make the run directory `out` (it must not exist) from the checkpoint at `path`; `say` hears
    the memory it needs before the weights are read."""
    path = Path(path).expanduser()
    if Path(out).exists():  # (before anything is read: a large checkpoint takes a while)
        raise LabkitError(f"{out} already exists: choose another --name, or remove it first")
    checkpoint, tok = read_checkpoint(path, tokenizer)
    n = parameter_count(checkpoint)
    c = checkpoint.config
    size = f"{4 * n / 1e9:,.2f} GB" if 4 * n >= 1e9 else f"{4 * n / 1e6:.1f} MB"
    say(f"{Path(out).name}: a {c.n_layers}-layer GPT-2, d_model {c.d_model}, {n:,} parameters: about {size} of "
        "memory in fp32, to convert it now and to load the run later")
    model = build(checkpoint)
    card = {"status": "finished", "kind": "lm", "family": "transformer", "parameters": count_parameters(model),
            "imported_from": str(path.resolve()), "source_format": checkpoint.source["format"],
            "steps": checkpoint.source.get("iter_num"), "labkit_version": __version__,
            "torch_version": torch.__version__, "updated_at": time.time()}
    with new_folder(Path(out)) as tmp:
        run = RunDir(tmp)
        run.create(tok, run_config(checkpoint, tok, corpus, tokenizer))
        run.save_best(model, {"imported_from": str(path.resolve())})
        run.write_card(card)
    return Path(out)
