"""Running the model an analysis reads, whatever its family: the language model inside a run,
its device, eval mode for the length of a block, and next-token log-probabilities at chosen
positions only.

Reading log-probabilities at a few positions (hidden states -> the model's output layer,
`model.logits(hidden)`, for those rows only) matters for real vocabularies: full logits for 64
sentences x 64 tokens x 33,278 words would take half a gigabyte.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from labkit.data.batching import pad_batch
from labkit.errors import LabkitError
from labkit.inspect.inputs import check_fits


def family(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "family", "?"))


def language_model(model: nn.Module) -> nn.Module:
    """The language model of a run: the model itself, or the body of a fine-tuned classifier
    (labkit.train.finetune wraps the pretrained network as `model.body`)."""
    return model.body if family(model) == "classifier" else model


def require_lm(model: nn.Module, what: str) -> nn.Module:
    """`model` if it predicts next tokens; a fine-tuned classifier does not (its output layer
    classifies sentences), so `what` cannot be computed on it."""
    if family(model) == "classifier":
        raise LabkitError(f"{what} needs next-token predictions, which a fine-tuned classifier does not "
                          "make: use its base language-model run")
    return model


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode (no dropout) for the block, then back to its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def log_probs_at(model: nn.Module, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                 pad_id: int = 0) -> list[torch.Tensor]:
    """For each sequence b, the next-token log-probabilities (len(positions[b]), V) after reading
    tokens 0..p, for each p in positions[b]. Sequences are right-padded into one batch: a causal
    model's prediction at p never reads the padding after it."""
    require_lm(model, "next-token log-probabilities")
    ids, _, _ = pad_batch(sequences, pad_id)  # (B, T)
    check_fits(model, ids.size(1))
    rows = torch.tensor([b for b, ps in enumerate(positions) for _ in ps], dtype=torch.long)
    cols = torch.tensor([p for ps in positions for p in ps], dtype=torch.long)
    with eval_mode(model), torch.no_grad():
        hidden = model(ids.to(device_of(model)), compute_logits=False).hidden  # (B, T, D)
        picked = model.logits(hidden[rows.to(hidden.device), cols.to(hidden.device)])  # (N, V)
        flat = F.log_softmax(picked.float(), dim=-1).cpu()
    return list(flat.split([len(ps) for ps in positions]))


def target_log_probs(model: nn.Module, ids: torch.Tensor, targets: torch.Tensor, *,
                     max_floats: int = 2 ** 24) -> torch.Tensor:
    """(B, T) log P(targets[b, t] | ids[b, :t + 1]) for ids and targets (B, T). The output layer
    runs on a few rows at a time, so that at most `max_floats` logits exist at once."""
    require_lm(model, "next-token log-probabilities")
    check_fits(model, ids.size(1))
    with eval_mode(model), torch.no_grad():
        hidden = model(ids.to(device_of(model)), compute_logits=False).hidden  # (B, T, D)
        flat, wanted = hidden.flatten(0, 1), targets.flatten().to(hidden.device)  # (B*T, D), (B*T,)
        step = max(1, max_floats // model.config.vocab_size)
        out = [F.log_softmax(model.logits(flat[i:i + step]).float(), -1).gather(1, wanted[i:i + step, None])[:, 0]
               for i in range(0, flat.size(0), step)]
    return torch.cat(out).view_as(targets).cpu()  # (B, T)
