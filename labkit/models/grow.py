"""A language model's vocabulary, grown: the same network with `n` more words at the end of its
vocabulary (ULMFiT's second stage, when the task's text holds words the pretraining text did not).

Every weight is copied; a tensor that grows along its first dimension (the embedding rows, a
softmax's rows and biases, an adaptive softmax's last cluster) gets the new rows set to the mean
of its old ones: a new word starts as the average word, and the language-model step on the task's
text (labkit.train.adapt) moves it from there. New words go to the end of the vocabulary, which an
adaptive softmax reads as its rarest cluster; its cluster boundaries stay where they were.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from labkit.errors import LabkitError
from labkit.models.output import default_cutoffs


def grown_config(config: Any, n: int) -> Any:
    """A language model's config with `n` more words (an adaptive softmax's clusters kept where they were)."""
    if n < 1:
        return config
    changes = {"vocab_size": config.vocab_size + n}
    if getattr(config, "output", "softmax") == "adaptive":
        changes["adaptive_cutoffs"] = tuple(config.adaptive_cutoffs or default_cutoffs(config.vocab_size))
    return config.replace(**changes)


def grow_vocabulary(model: nn.Module, n: int) -> nn.Module:
    """A new model like `model` (an RNN or Transformer language model) with `n` more words."""
    from labkit.models import build_model  # the package imports this module

    if n < 1:
        return model
    grown = build_model(grown_config(model.config, n)).to(next(model.parameters()).device)
    old, new = model.state_dict(), grown.state_dict()
    with torch.no_grad():
        for key, target in new.items():
            source = old[key]
            if source.shape == target.shape:
                target.copy_(source)
            elif source.shape[1:] == target.shape[1:] and target.shape[0] == source.shape[0] + n:
                target[: source.shape[0]] = source
                target[source.shape[0]:] = source.float().mean(0).to(source.dtype)
            else:
                raise LabkitError(f"cannot grow {key}: {tuple(source.shape)} -> {tuple(target.shape)}")
    return grown.train(model.training)
