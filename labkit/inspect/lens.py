"""The logit lens: what would the model predict if it stopped at layer i?

A model's output layer reads the top of the network. The logit lens (nostalgebraist, 2020) feeds
it each layer's state instead, and reads the prediction token by token: where in depth does the
right next word appear, and how sure is each layer?

- Transformer: the residual stream after block i (`blocks.{i}.hook_resid_post`), through the final
  LayerNorm and the output layer, exactly as the top block's output goes through them.
- RNN: layer i's hidden state h_t (`layers.{i}.hook_hidden`) through the output layer (which was
  trained on the top layer's states only, so the lower layers' readings are rougher still).

At the top layer the lens is the model's own prediction. The text is read as the start of a line
(after `<eos>`): position t has read `<eos>` and the text's tokens before t, and its target is
token t of the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from labkit.inspect.inputs import context_length, encode_text
from labkit.inspect.running import device_of, eval_mode, require_lm
from labkit.models.hooks import run_with_cache


@dataclass
class Lens:
    tokens: list[str]  # (T,) the input at each position: <eos>, then the text but its last token
    layer_names: list[str]  # (L,) the hook points read, bottom first
    top_ids: list[list[list[int]]]  # [L][T][k] the k likeliest next tokens, best first
    top_tokens: list[list[list[str]]]  # [L][T][k]
    top_probs: list[list[list[float]]]  # [L][T][k]
    target_logp: np.ndarray  # (L, T) nats: log P(the actual next token)
    target_rank: np.ndarray  # (L, T) 1 = the actual next token is the layer's top guess
    target_tokens: list[str] = field(default_factory=list)  # (T,) the actual next tokens
    notices: list[str] = field(default_factory=list)


def lens_points(model: nn.Module) -> list[str]:
    """The hook points the lens reads, bottom first: the embeddings (a Transformer's token and
    position embeddings, the stream into block 0; an RNN's word embeddings when they are as wide as
    its hidden state, which the output layer reads), then each layer's output."""
    if model.carries_state:
        bottom = ["hook_embed"] if model.config.d_embed == model.width else []
        return bottom + [f"layers.{i}.hook_hidden" for i in range(model.config.n_layers)]
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(model.config.n_layers)]


def layer_label(point: str) -> str:
    """A lens row's name for a reader: "embeddings", "block 0", "layer 1"."""
    if point in ("hook_embed", "blocks.0.hook_resid_pre"):
        return "embeddings"
    parts = point.split(".")
    return f"{'block' if parts[0] == 'blocks' else 'layer'} {parts[1]}" if len(parts) > 1 else point


def read_out(model: nn.Module, state: torch.Tensor) -> torch.Tensor:
    """Logits (..., V) of one layer's state (..., D), as the output layer would read it."""
    if not model.carries_state:
        state = model.ln_f(state)  # the Transformer's top block output goes through it too
    return model.logits(state)


def logit_lens(model: nn.Module, tokenizer: Any, text: str, *, top_k: int = 5,
               max_tokens: int | None = None) -> Lens:
    """The lens of every layer at every position of `text` (see the module docstring). Raises
    `EmptyInput` when the text has no tokens."""
    require_lm(model, "the logit lens")
    context = context_length(model)
    caps = [n for n in (max_tokens, context and context - 1) if n]
    ids, _, notices = encode_text(model, tokenizer, text, min(caps, default=None), "the limit asked for")
    inputs = torch.tensor([[tokenizer.eos_id, *ids[:-1]]], device=device_of(model))  # (1, T)
    targets = torch.tensor(ids)
    names = lens_points(model)
    k = max(1, min(top_k, model.config.vocab_size))
    top_ids, top_probs, target_logp, target_rank = [], [], [], []
    with eval_mode(model), torch.inference_mode():
        _, cache = run_with_cache(model, inputs, names=names, compute_logits=False)
        for name in names:
            logp = read_out(model, cache[name][0]).float().log_softmax(-1).cpu()  # (T, V)
            best = logp.topk(k, dim=-1)
            own = logp.gather(1, targets[:, None])[:, 0]  # (T,)
            top_ids.append(best.indices.tolist())
            top_probs.append(best.values.exp().tolist())
            target_logp.append(own.double().numpy())
            target_rank.append((logp > own[:, None]).sum(-1).numpy() + 1)
    top_tokens = [[[str(t) for t in tokenizer.id_to_token(row)] for row in layer] for layer in top_ids]
    return Lens([str(t) for t in tokenizer.id_to_token(inputs[0].tolist())], names, top_ids, top_tokens, top_probs,
                np.stack(target_logp), np.stack(target_rank), [str(t) for t in tokenizer.id_to_token(ids)], notices)
