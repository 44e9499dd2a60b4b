"""The pages' analyses of one run, each computed once for every session (common.analysis: keyed by
the run, its weights' stamp and the inputs; twenty students on one run and one sentence cost one
computation) and in a slot of the server's compute gate. Each takes the loaded run first."""

from __future__ import annotations

from typing import Any

from labkit.inspect import MAX_TOKENS, AttentionCapture, capture_attention, saliency
from labkit.inspect.lens import Lens, logit_lens
from labkit.inspect.saliency import SaliencyMap


def attention(run: Any, text: str, max_tokens: int = MAX_TOKENS) -> AttentionCapture:
    return capture_attention(run.model, run.tokenizer, text, max_tokens=max_tokens)


def lens(run: Any, text: str) -> Lens:
    return logit_lens(run.model, run.tokenizer, text, top_k=5, max_tokens=64)


def saliency_map(run: Any, text: str, method: str) -> SaliencyMap:
    return saliency(run.model, run.tokenizer, text, method=method)
