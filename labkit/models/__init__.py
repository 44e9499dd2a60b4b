"""Language models of both families behind one interface.

`model(idx, state)` returns an `LMOutput` (logits, hidden states, the state to carry on);
`build_model(config)` makes either family, or a classifier on one, from its config, with the
speed paths of labkit.models.fast unless `fast=False`. Activations inside are read (and replaced)
by name through labkit.models.hooks: `run_with_cache`, `hooks`.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from labkit.errors import LabkitError
from labkit.models.bow import BagOfWords, BagOfWordsConfig
from labkit.models.classifier import ClassifierConfig, SequenceClassifier
from labkit.models.fast import accelerate
from labkit.models.hooks import ActivationCache, HookPoint, hook_points, hooks, run_with_cache
from labkit.models.output import LMOutput
from labkit.models.rnn import CELLS, RNNLM, RNNConfig
from labkit.models.transformer import KVCache, TransformerConfig, TransformerLM
from labkit.models.view import own_modules

ModelConfig = RNNConfig | TransformerConfig
FAMILIES: dict[str, tuple[type, type]] = {
    "rnn": (RNNConfig, RNNLM),
    "transformer": (TransformerConfig, TransformerLM),
    "classifier": (ClassifierConfig, SequenceClassifier),
    "bow": (BagOfWordsConfig, BagOfWords),  # the fine-tuning yardstick: no language model inside
}

__all__ = ["CELLS", "FAMILIES", "ActivationCache", "BagOfWords", "BagOfWordsConfig", "ClassifierConfig", "HookPoint", "KVCache",
           "LMOutput", "ModelConfig", "RNNConfig", "RNNLM", "SequenceClassifier", "TransformerConfig", "TransformerLM",
           "build_model", "config_from_dict", "count_parameters", "hook_points", "hooks", "own_modules", "run_with_cache"]


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    family = data.get("family") if isinstance(data, dict) else None
    if not isinstance(family, str) or family not in FAMILIES:
        raise LabkitError(f"model config has family {family!r}; expected one of "
                          f"{', '.join(FAMILIES)}")
    return FAMILIES[family][0].from_dict(data)


MAX_LAYERS = 1_000  # far above any real model here; a config.json asking for more is damaged


def build_model(config: ModelConfig | ClassifierConfig | dict[str, Any], *, fast: bool = True) -> nn.Module:
    """The model for `config`, after checking that it fits in this machine's memory (a config
    from a stranger, or a typo, must not hang or exhaust the machine). `fast`: with the speed
    paths of labkit.models.fast (same parameters, same results); False: the plain model."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    check_size(config)
    if config.family == "classifier":
        return SequenceClassifier(config, fast=fast)
    if config.family == "bow":
        return BagOfWords(config)
    model = FAMILIES[config.family][1](config)
    return accelerate(model) if fast else model


def check_size(config: ModelConfig) -> None:
    if getattr(config, "n_layers", 0) > MAX_LAYERS:
        raise LabkitError(f"{config.n_layers:,} layers is beyond labkit's limit of {MAX_LAYERS:,}")
    if config.family == "classifier":
        return  # its body is built, and checked, through build_model
    n = config.approximate_parameters()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    if memory and 4 * n > memory:
        raise LabkitError(f"this model has {n:,} parameters, {4 * n / 1e9:,.1f} GB in fp32: more "
                          f"than this machine's memory ({memory / 1e9:.1f} GB); choose smaller sizes")


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Parameters counted once even when tied (model.parameters() already de-duplicates)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
