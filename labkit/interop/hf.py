"""Hugging Face GPT-2 checkpoint folders (`GPT2LMHeadModel`): a labkit Transformer out as one, and one in.

Where the two architectures could differ, each option is mapped exactly or refused with what
differs: the activation (labkit's exact GELU is GPT-2's "gelu", GPT-2's "gelu_new" is labkit's
"gelu_tanh"), the LayerNorm epsilon (1e-5 in both), the attention scaling (1/sqrt(head size)),
the tied output layer (either way), learned positions (both). An adaptive-softmax output layer has
no GPT-2 form, nor do GPT-2's `scale_attn_by_inverse_layer_idx` and cross-attention a labkit one.
Nothing here downloads: a folder is read from disk, as a user's Hugging Face cache holds it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from labkit.errors import LabkitError
from labkit.interop.folders import new_folder
from labkit.interop.gpt2 import Checkpoint, to_gpt2
from labkit.interop.tokenizer import hf_tokenizer_files, read_json
from labkit.interop.weights import Tensors, load_torch_file, open_safetensors, open_safetensors_index, tensor_dict
from labkit.models import TransformerConfig
from labkit.runs import RunDir, load_run

# GPT2Config's defaults, for the fields an older or hand-written config.json may leave out.
GPT2_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None,
    "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False, "add_cross_attention": False, "tie_word_embeddings": True}
# GPT-2's activation_function -> labkit's activation (exactly the same function)
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
TO_GPT2_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
LAYER_NORM_EPS = 1e-5  # torch's nn.LayerNorm default, which labkit's Transformer uses


def hf_names() -> dict[str, str]:
    """A Hugging Face folder's file names, as the hub library spells them."""
    from huggingface_hub import constants

    return {"config": constants.CONFIG_NAME, "weights": constants.SAFETENSORS_SINGLE_FILE,
            "index": constants.SAFETENSORS_INDEX_FILE, "torch": constants.PYTORCH_WEIGHTS_NAME}


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / hf_names()["config"]).is_file()


def gpt2_config(model: TransformerConfig, eos_id: int, pad_id: int) -> dict[str, Any]:
    """config.json of a GPT2LMHeadModel computing what `model` computes."""
    if model.output != "softmax":
        raise LabkitError(f"this run has an {model.output} output layer, which GPT-2 has no form of; "
                          "only runs with the full softmax (--output softmax) export")
    if model.activation not in TO_GPT2_ACTIVATION:
        raise LabkitError(f"activation {model.activation!r} has no GPT-2 counterpart")
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": model.vocab_size,
            "n_positions": model.context_length, "n_embd": model.d_model, "n_layer": model.n_layers,
            "n_head": model.n_heads, "n_inner": model.d_ff, "activation_function": TO_GPT2_ACTIVATION[model.activation],
            "resid_pdrop": model.dropout, "embd_pdrop": model.dropout, "attn_pdrop": model.dropout,
            "layer_norm_epsilon": LAYER_NORM_EPS, "initializer_range": 0.02, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
            "add_cross_attention": False, "tie_word_embeddings": model.tie_weights, "use_cache": True,
            "bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": pad_id, "dtype": "float32"}


def labkit_config(hf: dict[str, Any], where: Path) -> TransformerConfig:
    """The labkit TransformerConfig of a GPT-2 config.json, or a LabkitError saying what differs."""
    model_type = hf.get("model_type")
    if model_type != "gpt2":
        raise LabkitError(f"{where} holds a {model_type or 'model without a model_type'} checkpoint, not GPT-2: "
                          "labkit imports GPT-2 checkpoints (model_type gpt2) and nanoGPT ckpt.pt files")
    c = GPT2_DEFAULTS | {k: hf[k] for k in GPT2_DEFAULTS if k in hf}
    differs = []
    if c["activation_function"] not in ACTIVATIONS:
        differs.append(f"activation_function {c['activation_function']!r} (labkit has {', '.join(ACTIVATIONS)})")
    if c["layer_norm_epsilon"] != LAYER_NORM_EPS:
        differs.append(f"layer_norm_epsilon {c['layer_norm_epsilon']} (labkit's is {LAYER_NORM_EPS})")
    if c["scale_attn_weights"] is not True:
        differs.append("scale_attn_weights false (labkit always divides by sqrt(head size))")
    if c["scale_attn_by_inverse_layer_idx"]:
        differs.append("scale_attn_by_inverse_layer_idx")
    if c["add_cross_attention"]:
        differs.append("add_cross_attention")
    if differs:
        raise LabkitError(f"{where}: GPT-2 options labkit's Transformer cannot compute exactly: {'; '.join(differs)}")
    width, inner = c["n_embd"], c["n_inner"]
    d_ff = inner if inner is not None else 4 * width if type(width) is int else width  # (a bad width: refused below)
    return TransformerConfig.from_dict({
        "vocab_size": c["vocab_size"], "d_model": width, "n_layers": c["n_layer"], "n_heads": c["n_head"],
        "d_ff": d_ff, "context_length": c["n_positions"], "dropout": c["resid_pdrop"],
        "tie_weights": c["tie_word_embeddings"], "activation": ACTIVATIONS[c["activation_function"]]})


def open_weights(folder: Path) -> Tensors:
    names = hf_names()
    if (folder / names["weights"]).is_file():
        return open_safetensors([folder / names["weights"]])
    if (folder / names["index"]).is_file():
        return open_safetensors_index(folder / names["index"])
    if (folder / names["torch"]).is_file():
        return tensor_dict(load_torch_file(folder / names["torch"]), folder / names["torch"])
    raise LabkitError(f"{folder} has a config but no weights ({names['weights']}, {names['index']} or "
                      f"{names['torch']})")


def read_hf(folder: Path) -> Checkpoint:
    """A Hugging Face GPT-2 folder: its config checked and mapped, its weights opened lazily."""
    config_path = folder / hf_names()["config"]
    hf = read_json(config_path, "model config")
    if "format_version" in hf and "kind" in hf:
        raise LabkitError(f"{folder} is a labkit run already: use it as it is")
    config = labkit_config(hf, folder)
    source = {"format": "hf", "path": str(folder.resolve()), "model_type": hf.get("model_type"),
              "name_or_path": hf.get("_name_or_path"), "architectures": hf.get("architectures"),
              "activation_function": hf.get("activation_function", GPT2_DEFAULTS["activation_function"])}
    return Checkpoint(config, open_weights(folder), conv1d=True, zero_biases=False, source=source)



def export_hf(run: str | Path, out: str | Path, which: str = "best") -> Path:
    """Write the Transformer run `run` as a Hugging Face GPT-2 folder `out` (which must not exist):
    config.json, model.safetensors and the tokenizer; all of it, or nothing."""
    loaded = load_run(run, which=which)
    kind = loaded.config.get("kind", "lm")
    model = loaded.model.config
    if kind != "lm" or model.family != "transformer":
        what = f"a {kind} run" if kind != "lm" else f"an {getattr(model, 'cell', model.family).upper()} language model"
        raise LabkitError(f"{run} is {what}: only Transformer language models export to Hugging Face GPT-2")
    tokenizer = loaded.tokenizer
    config = gpt2_config(model, tokenizer.eos_id, tokenizer.pad_id)
    files = hf_tokenizer_files(tokenizer, model.context_length)  # (what cannot be exported is refused first)
    tensors = to_gpt2(loaded.model)
    names = hf_names()
    inside = next((p for p in (Path(out).resolve(), *Path(out).resolve().parents) if RunDir(p).exists()), None)
    if inside is not None:
        raise LabkitError(f"{out} is inside the run {inside}: export to a folder of its own, outside any run")
    with new_folder(Path(out)) as tmp:
        (tmp / names["config"]).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / names["weights"]), metadata={"format": "pt"})
        # safetensors makes its file readable by its owner only: the same mode as the folder's other files
        os.chmod(tmp / names["weights"], stat.S_IMODE((tmp / names["config"]).stat().st_mode))
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
    return Path(out)
