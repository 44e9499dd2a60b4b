"""Surgery on the Attention and Compare pages: switch a part of a model off (a Transformer's
heads; an RNN's hidden units or a whole layer's state) and see at once, token by token, how much
log-probability each prediction of the sentence lost or gained; and every head (or the units of
one layer) ranked by how much the loss rises when it alone is removed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from labkit.errors import LabkitError
from labkit.inspect import EmptyInput, style
from labkit.inspect import inside_plots as ip
from labkit.inspect.surgery import ablate, head_importance, unit_importance
from labkit.runs import LoadedRun, RunInfo

import common
from panels import share, ui


@st.cache_data(max_entries=16, show_spinner="Ranking the heads (each one switched off in turn)...")
def ranked_heads(_run: LoadedRun, path: str, stamp: tuple[int, int], texts: tuple[str, ...]) -> list[dict]:
    return head_importance(_run.model, _run.tokenizer, list(texts))


@st.cache_data(max_entries=16, show_spinner="Ranking the units (each one switched off in turn)...")
def ranked_units(_run: LoadedRun, path: str, stamp: tuple[int, int], texts: tuple[str, ...], layer: int) -> list[dict]:
    return unit_importance(_run.model, _run.tokenizer, list(texts), layer, top=20)


def head_name(head: tuple[int, int]) -> str:
    return f"L{head[0]} H{head[1]}"


def head_code(head: tuple[int, int]) -> str:
    """A head as a page's link writes it: L1H2."""
    return f"L{head[0]}H{head[1]}"


def panel(info: RunInfo, run: LoadedRun, text: str, texts: Sequence[str], key: str, *, narrow: bool = False,
          share_as: str = "") -> None:
    """The surgery view of one run on `text`; `texts` (the sentence and the examples) for the ranking.
    `narrow`: the view sits in a column (Compare): its controls go above its charts, not beside them.
    `share_as`: what the names of its controls in the page's link start with (panels.share)."""
    texts = tuple(dict.fromkeys(t for t in (text, *texts) if t.strip()))
    try:
        if run.model.carries_state:
            cut, what = rnn_controls(info, run, texts, key, narrow, share_as)
        else:
            cut, what = transformer_controls(info, run, texts, key, narrow, share_as)
        if not any(cut.values()):
            st.caption("Pick something to switch off.")
            return
        effect = ablate(run.model, run.tokenizer, text, **cut)
    except EmptyInput:
        st.info("Type a sentence to see what each part of the model does for it.")
        return
    except LabkitError as e:
        st.error(str(e))
        return
    for notice in effect.notices:
        st.warning(notice)
    ui.chart(ip.token_effect_figure(effect, title=f"{what} switched off"), f"{key}_effect")
    most = int(np.argmax(np.abs(effect.delta)))
    st.caption(f"With {what} switched off, the mean loss on this sentence changes by "
               f"{style.number(effect.loss_increase, signed=True)} nats/token. The prediction that changes most is "
               f"token {most} ({common.md_escape(effect.tokens[most])}): p {style.number(np.exp(effect.base_logp[most]))} "
               f"→ {style.number(np.exp(effect.ablated_logp[most]))}. Each bar is the token's loss (−log p, given the "
               "tokens before it) with the part switched off minus with it in place: red, the loss rose (the part "
               "helped that prediction); blue, it fell (the part hurt it). The ranking uses the same colours.")


def sides(narrow: bool) -> tuple:
    """Where the controls and the ranking go: side by side, or one above the other in a column."""
    return (st.container(), st.container()) if narrow else st.columns([2, 3])


def transformer_controls(info: RunInfo, run: LoadedRun, texts: tuple[str, ...], key: str,
                         narrow: bool, share_as: str = "") -> tuple[dict, str]:
    config = run.model.config
    ranking = ranked_heads(run, str(info.path), common.stamp(info), texts)
    left, right = sides(narrow)
    options = [(layer, head) for layer in range(config.n_layers) for head in range(config.n_heads)]
    top = (ranking[0]["layer"], ranking[0]["head"])
    default = share.shared(f"{share_as}heads", f"{key}_heads", [top],
                           share.choices(options, [head_code(o) for o in options]))
    heads = left.multiselect("Heads to switch off", options, default=default, format_func=head_name,
                             key=f"{key}_heads", help="Each head's output is set to zero: it adds nothing to the "
                                                      "residual stream. The default is the head whose removal costs most.")
    with right:
        ui.chart(ip.head_importance_figure(ranking), f"{key}_ranking")
        st.caption(f"Mean next-token loss over {len(texts)} sentences (this one and the examples) with one head "
                   f"switched off, minus the intact model's: red, the loss rose (the head helped). Costliest: "
                   + ", ".join(f"{head_name((r['layer'], r['head']))} {style.number(r['loss_increase'], signed=True)}"
                               for r in ranking[:3]) + ".")
    return {"heads": heads}, ", ".join(map(head_name, heads)) or "nothing"


WHAT = ["units of its hidden state", "the whole layer's state"]


def rnn_controls(info: RunInfo, run: LoadedRun, texts: tuple[str, ...], key: str, narrow: bool,
                 share_as: str = "") -> tuple[dict, str]:
    config = run.model.config
    left, right = sides(narrow)
    layer = 0
    if config.n_layers > 1:
        layers = list(range(config.n_layers))
        layer = left.selectbox("Layer", layers, key=f"{key}_layer",
                               index=share.shared(f"{share_as}layer", f"{key}_layer", 0, share.choice(layers)))
    what = share.shared(f"{share_as}off", f"{key}_what", WHAT[0], share.choice(WHAT, ["units", "layer"]))
    whole = left.radio("Switch off", WHAT, index=WHAT.index(what), key=f"{key}_what",
                       help="A unit's h_t is set to zero at every step, so the recurrence reads the zero too and "
                            "later predictions feel it.") != WHAT[0]
    if whole:
        return {"layers": [layer]}, f"layer {layer}'s state"
    ranking = ranked_units(run, str(info.path), common.stamp(info), texts, layer)
    every = list(range(run.model.width))
    default = share.shared(f"{share_as}units", f"{key}_units::{layer}", [r["unit"] for r in ranking[:3]],
                           share.choices(every))
    units = left.multiselect("Units", every, default=default, key=f"{key}_units::{layer}",
                             help="The default is the three units whose removal costs most.")
    with right:
        ui.chart(ip.unit_importance_figure(ranking, title="the costliest units, each switched off alone"), f"{key}_ranking")
        st.caption(f"Mean next-token loss over {len(texts)} sentences with one unit of layer {layer} set to zero, "
                   f"minus the intact model's; the {len(ranking)} costliest of {run.model.width}.")
    return {"units": [(layer, u) for u in units]}, (f"unit{'s' if len(units) > 1 else ''} "
                                                    + ", ".join(map(str, units)) + f" of layer {layer}")
