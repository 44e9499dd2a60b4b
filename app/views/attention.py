"""Attention: bertviz's head and model views (offline) and our own heatmaps and head statistics."""

from __future__ import annotations

import streamlit as st

from labkit.errors import LabkitError
from labkit.inspect.attention import MAX_TOKENS, EmptyInput, capture_attention, head_stats, sink_heads
from labkit.inspect.bertviz_offline import head_view_height, head_view_html, model_view_html
from labkit.inspect.plots import attention_grid_figure, head_stats_figure
from labkit.runs import is_transformer

import common

st.title("Attention")
infos, _ = common.language_models(is_transformer)
if not infos:
    st.info(f"Attention views need a Transformer run, and `{common.root()}` has none: run `labkit pretrain "
            "--preset tiny --model transformer`, or **Train demo models** on the Runs page.")
    st.stop()

names = [i.path.name for i in infos]
name = st.selectbox("Transformer run", names, key="attn_run")
info = next(i for i in infos if i.path.name == name)
example = st.selectbox("Example sentence", common.examples(info), key="attn_example")
text = st.text_area("Sentence (type your own)", value=example, key=f"attn_text::{example}", height=80)

loaded = common.load(info)
if loaded is None:
    st.stop()
try:
    capture = capture_attention(loaded.model, loaded.tokenizer, text, max_tokens=MAX_TOKENS)
except EmptyInput:
    st.info("Type a sentence to see where each head looks.")
    st.stop()
except LabkitError as e:
    st.error(str(e))
    st.stop()
for notice in capture.notices:
    st.warning(notice)
if loaded.tokenizer.unk_id is not None and loaded.tokenizer.unk_id in capture.ids:
    st.caption("Words outside the run's vocabulary show as <unk>: that is what the model sees.")
st.caption(f"{len(capture.tokens)} tokens, {capture.n_layers} layers x {capture.n_heads} heads.")

head_tab, model_tab, grid_tab, stats_tab = st.tabs(["bertviz: head view", "bertviz: model view",
                                                    "heatmaps", "head statistics"])
with head_tab:
    st.caption("Lines join each token (left) to the tokens it attends to (right); hover a token to "
               "isolate it, click a head's colour to toggle it. Drawn offline: no CDN.")
    st.iframe(head_view_html(capture), height=head_view_height(capture))
with model_tab:
    st.caption("Every layer (rows) and head (columns) at once; click a thumbnail to enlarge it.")
    st.iframe(model_view_html(capture), height="content")
with grid_tab:
    st.caption("Rows are queries, columns are keys; grey cells are hidden by the causal mask "
               "(a token cannot look at later tokens).")
    st.plotly_chart(attention_grid_figure(capture.attention, capture.tokens), key="attn_grid")
with stats_tab:
    stats = head_stats(capture.attention)
    sinks = sink_heads(stats)
    first = common.md_escape(capture.tokens[0])
    found = (f"{len(sinks)} of {len(stats)} heads put more than half of their attention on the first token "
             f"({first})." if sinks else
             f"no head here puts more than half of its attention on the first token ({first}); in larger, "
             "longer-trained models many do.")
    st.markdown(f"**Attention sink**: {found} A softmax must hand out a total weight of 1, so a head with "
                "nothing useful to read parks it on a token that every position can see, where it changes "
                "little: that first token is the sink.")
    st.plotly_chart(head_stats_figure(stats), key="head_stats_chart")
    st.dataframe([{"layer": r["layer"], "head": r["head"], "entropy (nats)": round(r["entropy"], 3),
                   "entropy / uniform": round(r["entropy_ratio"], 3),
                   "mean distance (tokens)": round(r["mean_distance"], 2),
                   "first-token share": round(r["first_token_share"], 3)} for r in stats],
                 hide_index=True, width="stretch", key="head_stats_table")
    st.caption("Averaged over query positions 1..T-1. Entropy: 0 = looks at one token; "
               "'entropy / uniform' = 1 spreads evenly. Mean distance: how far back a head looks.")
