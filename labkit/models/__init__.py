"""Language models of both families behind one interface.

`model(idx, state)` returns an `LMOutput` (logits, hidden states, the state to carry on, and
attention maps when asked); `build_model(config)` makes either family from its config.
"""

from __future__ import annotations

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


def build_model(config: ModelConfig | dict[str, Any]) -> nn.Module:
    if isinstance(config, dict):
        config = config_from_dict(config)
    return FAMILIES[config.family][1](config)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Parameters counted once even when tied (model.parameters() already de-duplicates)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
