"""Language models of both families behind one interface.

`model(idx, state)` returns an `LMOutput` (logits, hidden states, the state to carry on, and
attention maps when asked); `build_model(config)` makes either family from its config.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from labkit.errors import LabkitError
from labkit.models.classifier import ClassifierConfig, SequenceClassifier
from labkit.models.output import LMOutput
from labkit.models.rnn import CELLS, RNNLM, RNNConfig
from labkit.models.transformer import KVCache, TransformerConfig, TransformerLM

ModelConfig = RNNConfig | TransformerConfig
FAMILIES: dict[str, tuple[type, type]] = {
    "rnn": (RNNConfig, RNNLM),
    "transformer": (TransformerConfig, TransformerLM),
    "classifier": (ClassifierConfig, SequenceClassifier),
}

__all__ = ["CELLS", "FAMILIES", "ClassifierConfig", "KVCache", "LMOutput", "ModelConfig", "RNNConfig",
           "RNNLM", "SequenceClassifier", "TransformerConfig", "TransformerLM", "build_model",
           "config_from_dict", "count_parameters"]


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    family = data.get("family") if isinstance(data, dict) else None
    if family not in FAMILIES:
        raise LabkitError(f"model config has family {family!r}; expected one of "
                          f"{', '.join(FAMILIES)}")
    return FAMILIES[family][0].from_dict(data)


MAX_LAYERS = 1_000  # far above any real model here; a config.json asking for more is damaged


def build_model(config: ModelConfig | dict[str, Any]) -> nn.Module:
    """The model for `config`, after checking that it fits in this machine's memory (a config
    from a stranger, or a typo, must not hang or exhaust the machine)."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    check_size(config)
    return FAMILIES[config.family][1](config)


def check_size(config: ModelConfig) -> None:
    if getattr(config, "n_layers", 0) > MAX_LAYERS:
        raise LabkitError(f"{config.n_layers:,} layers is beyond labkit's limit of {MAX_LAYERS:,}")
    if config.family == "classifier":
        return  # its body is built, and checked, through build_model
    n = approximate_parameters(config)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    if memory and 4 * n > memory:
        raise LabkitError(f"this model has {n:,} parameters, {4 * n / 1e9:,.1f} GB in fp32: more "
                          f"than this machine's memory ({memory / 1e9:.1f} GB); choose smaller sizes")


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Parameters counted once even when tied (model.parameters() already de-duplicates)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def approximate_parameters(config: RNNConfig | TransformerConfig) -> int:
    """The parameter count from the config alone (the big matrices; biases and norms aside)."""
    c = config
    if c.family == "rnn":
        gates = {"lstm": 4, "gru": 3}.get(c.cell, 1)
        n = c.vocab_size * c.d_embed + (0 if c.tie_weights else c.d_hidden * c.vocab_size)
        return n + sum(gates * c.d_hidden * ((c.d_embed if i == 0 else c.d_hidden) + c.d_hidden)
                       for i in range(c.n_layers))
    n = c.vocab_size * c.d_model + c.context_length * c.d_model
    n += 0 if c.tie_weights else c.d_model * c.vocab_size
    return n + c.n_layers * (4 * c.d_model * c.d_model + 2 * c.d_model * c.d_ff)
