"""How surprised is a model by each token of a text? Per-token surprisal, for runs side by side.

The surprisal of token t is -log2 P(token t | the tokens before it), in bits: 0 for a token the
model was sure of, 1 bit for a coin flip, log2(V) for a uniform guess over V words. Its mean over a
text is the cross-entropy in bits; 2 to that power is the perplexity. Reading it token by token
shows *where* one model beats another: an LSTM and a Transformer often agree on the easy words and
differ on the ones that need a long context (a name mentioned earlier, a verb far from its subject).

The text is read as the start of a line (after `<eos>`, as the training text presents it), so the
first token has a surprisal too.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from plotly.colors import sample_colorscale
from torch import nn

from labkit.errors import LabkitError
from labkit.inspect import style
from labkit.inspect.inputs import context_length, encode_text
from labkit.inspect.running import require_lm, target_log_probs


@dataclass
class Surprisal:
    tokens: list[str]
    ids: list[int]
    bits: np.ndarray  # (T,): -log2 P(token t | <eos>, tokens < t)
    total_tokens: int  # before any cut
    notices: list[str] = field(default_factory=list)

    @property
    def mean_bits(self) -> float:
        return float(self.bits.mean())


def token_surprisal(model: nn.Module, tokenizer: Any, text: str, *, max_tokens: int | None = None) -> Surprisal:
    """Surprisal in bits of every token of `text` (cut to `max_tokens` and to what fits the context
    after `<eos>`). Raises `EmptyInput` when the text has no tokens."""
    require_lm(model, "surprisal")
    context = context_length(model)
    caps = [n for n in (max_tokens, context and context - 1) if n]
    limit = min(caps, default=None)
    why = "the limit asked for" if limit == max_tokens else "the model's context, after <eos>"
    ids, total, notices = encode_text(model, tokenizer, text, limit, why)
    inputs = torch.tensor([[tokenizer.eos_id, *ids[:-1]]])  # (1, T): each token read after the ones before it
    log_p = target_log_probs(model, inputs, torch.tensor([ids]))[0]  # (T,), nats
    bits = (-log_p / math.log(2)).double().numpy()
    return Surprisal([str(t) for t in tokenizer.id_to_token(ids)], ids, bits, total, notices)


def compare_surprisal(runs: dict[str, tuple[nn.Module, Any]], text: str, *,
                      max_tokens: int | None = None) -> dict[str, Surprisal]:
    """`token_surprisal` of `text` under each run (name -> (model, tokenizer)), cut to the same
    number of tokens. The runs must split the text into as many tokens (word tokenizers do, even
    with different vocabularies: a word one run lacks shows as <unk> there)."""
    results = {name: token_surprisal(model, tokenizer, text, max_tokens=max_tokens)
               for name, (model, tokenizer) in runs.items()}
    totals = {r.total_tokens for r in results.values()}
    if len(totals) > 1:
        raise LabkitError("the runs split the text into different numbers of tokens "
                          f"({', '.join(f'{n}: {r.total_tokens}' for n, r in results.items())}); compare runs "
                          "with the same kind of tokenizer")
    shortest = min(len(r.ids) for r in results.values())
    for r in results.values():
        if len(r.ids) > shortest:
            r.notices.append(f"Cut to {shortest} tokens, what every run's context holds.")
            r.tokens, r.ids, r.bits = r.tokens[:shortest], r.ids[:shortest], r.bits[:shortest]
    return results


def _color(bits: float, top: float) -> tuple[str, str]:
    """(background, text colour) of a token: the surprisal scale of the house style, from white
    (0 bits) to dark red (`top` bits and above), the same colours as `surprisal_figure`."""
    x = min(max(bits / top, 0.0), 1.0) if top > 0 else 0.0
    return sample_colorscale(style.COLORSCALES["surprisal"].colorscale, [x])[0], "white" if x > 0.6 else style.INK


def surprisal_html(results: dict[str, Surprisal], top_bits: float | None = None) -> str:
    """An HTML fragment: per run, its tokens on a background from white (0 bits) to red
    (`top_bits`, default the largest surprisal shown); hover a token for its value."""
    top = top_bits or max((float(r.bits.max()) for r in results.values() if len(r.bits)), default=1.0)
    rows = []
    for name, r in results.items():
        spans = "".join(f'<span title="{b:.2f} bits" style="background:{bg};color:{fg};padding:1px 3px;'
                        f'margin:1px;border-radius:3px;display:inline-block">{html.escape(t)}</span>'
                        for t, b in zip(r.tokens, r.bits) for bg, fg in [_color(b, top)])
        rows.append(f'<div style="margin:4px 0"><b>{html.escape(name)}</b> '
                    f'<small>(mean {r.mean_bits:.2f} bits/token)</small><br>{spans}</div>')
    ramp = ", ".join(sample_colorscale(style.COLORSCALES["surprisal"].colorscale, [0.0, 0.5, 1.0]))
    legend = (f'<small><span style="display:inline-block;width:120px;height:10px;vertical-align:middle;'
              f'background:linear-gradient(to right, {ramp})"></span> 0 to {top:.1f} bits (and more)</small>')
    return (f'<div style="font-family:{html.escape(style.FONT["family"])};font-size:14px;line-height:1.9">'
            + "".join(rows) + legend + "</div>")
