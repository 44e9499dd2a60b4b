"""Long inputs on the Attention page: one layer's attention over up to 1,024 tokens, pooled into
blocks of tokens so that the heatmap draws at once and can be zoomed (bertviz draws every pair of
tokens as a line and stalls long before that)."""

from __future__ import annotations

import time

import streamlit as st

from labkit.errors import LabkitError
from labkit.inspect import EmptyInput, inside_plots
from labkit.inspect.attention import LongAttention, long_attention
from labkit.runs import LoadedRun, RunInfo

import common
from panels import corpus, share, ui

SOURCES = ("the run's validation text", "the sentence above")


@st.cache_data(max_entries=16, show_spinner="Reading the attention of every token...")
def measure(_run: LoadedRun, path: str, stamp: tuple[int, int], text: str, tokens: int, layer: int,
            head: int | None) -> tuple[LongAttention, float]:
    start = time.perf_counter()
    result = long_attention(_run.model, _run.tokenizer, text, max_tokens=tokens, cells=256, layer=layer, head=head)
    return result, time.perf_counter() - start


def panel(info: RunInfo, run: LoadedRun, sentence: str, key: str) -> None:
    config = run.model.config
    c1, c2, c3, c4 = st.columns(4)
    sizes, layers, heads = [128, 256, 512, 1024], list(range(config.n_layers)), [None, *range(config.n_heads)]
    first = share.shared("long_text", f"{key}_source", SOURCES[0], share.choice(SOURCES, ["validation", "sentence"]))
    source = c1.radio("Text", SOURCES, index=SOURCES.index(first), key=f"{key}_source")
    tokens = c2.select_slider("Tokens (at most)", sizes, key=f"{key}_tokens",
                              value=share.shared("long_tokens", f"{key}_tokens", 1024, share.choice(sizes)))
    first = share.shared("long_layer", f"{key}_layer", layers[-1], share.choice(layers))
    layer = c3.selectbox("Layer", layers, index=first, key=f"{key}_layer")
    first = share.shared("long_head", f"{key}_head", None, share.choice(heads, ["mean", *map(str, heads[1:])]))
    head = c4.selectbox("Head", heads, index=heads.index(first), key=f"{key}_head",
                        format_func=lambda h: "mean of the heads" if h is None else f"head {h}")
    try:
        text = corpus.opening(info, 2 * tokens) if source == SOURCES[0] else sentence
        start = time.perf_counter()
        result, computed = measure(run, str(info.path), common.stamp(info), text, tokens, layer, head)
    except EmptyInput:
        st.info("Type a longer text above, or read the run's validation text.")
        return
    except (LabkitError, OSError, ValueError) as e:
        st.error(f"Cannot read that text: {e}")
        return
    for notice in result.notices:
        st.caption(notice)
    T, n = len(result.tokens), len(result.edges) - 1
    ui.chart(inside_plots.long_attention_figure(result), f"{key}_map")
    block = f"blocks of about {T / n:.1f} tokens" if n < T else "one cell per token"
    st.caption(f"{T:,} tokens in {n} x {n} cells ({block}); cell (i, j) is the share of attention the queries of "
               f"block i put on the keys of block j (each row adds up to 1). Computed in {computed:.2f} s, ready to "
               f"draw in {time.perf_counter() - start:.2f} s on this machine. Drag a box to zoom in, double-click to "
               "zoom out; the diagonal is where a head looks at its neighbours, a bright first column an attention sink.")
