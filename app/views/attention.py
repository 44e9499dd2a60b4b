"""Attention: bertviz's head and model views (offline, exportable), our heatmaps and head
statistics, surgery (switch heads off), the heads before and after fine-tuning, and long inputs.
Only the open tab is computed."""

from __future__ import annotations

import streamlit as st

from labkit.errors import LabkitError
from labkit.inspect.attention import EmptyInput, head_stats, sink_heads
from labkit.inspect.bertviz_offline import head_view_html, model_view_html
from labkit.inspect.plots import attention_grid_figure, head_stats_figure
from labkit.inspect.style import count
from labkit.runs import is_transformer

import common
from panels import analyses, finetuned, longinput, share, surgery, ui

# Short names: seven tabs side by side fit a 1,100-pixel window with the sidebar open.
TABS = ["head view", "model view", "heatmaps", "statistics", "surgery", "fine-tuning", "long inputs"]

st.title("Attention")
share.begin()
infos, all_infos = common.language_models(is_transformer)
if not infos:
    st.info(f"Attention views need a Transformer run, and `{common.root()}` has none: run `labkit pretrain "
            "--preset tiny --model transformer`, or **Train demo models** on the Runs page.")
    st.stop()

by_name = {i.path.name: i for i in infos}
name = ui.pick_run("Transformer run", list(by_name), "attn_run", param="run")
if name is None:
    st.stop()
info = by_name[name]
common.quality_note(info)
examples = common.examples(info)
example = st.selectbox("Example sentence", examples, key="attn_example", index=examples.index(share.shared(
    "example", "attn_example", examples[0], share.choice(examples, [str(i) for i in range(len(examples))]))))
text = st.text_area("Sentence (type your own)", key=f"attn_text::{example}", height=80,
                    value=share.shared("text", f"attn_text::{example}", example, share.text()))

loaded = common.load(info)
if loaded is None:
    st.stop()
try:
    capture = common.analysis(analyses.attention, info, text)
except EmptyInput:
    capture = None
    st.info("Type a sentence to see where each head looks.")
except LabkitError as e:
    st.error(str(e))
    st.stop()
if capture is not None:
    for notice in capture.notices:
        st.warning(notice)
    if loaded.tokenizer.unk_id is not None and loaded.tokenizer.unk_id in capture.ids:
        st.caption("Words outside the run's vocabulary show as <unk>: that is what the model sees.")
    st.caption(f"{count(len(capture.tokens), 'token')}, {count(capture.n_layers, 'layer')} x {count(capture.n_heads, 'head')}.")

share.tab("tab", "attn_tab", TABS)
tabs = dict(zip(TABS, st.tabs(TABS, key="attn_tab", on_change="rerun")))


def statistics() -> None:
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
    ui.chart(head_stats_figure(stats), "head_stats_chart")
    ui.table([{"layer": r["layer"], "head": r["head"], "entropy (nats)": r["entropy"],
               "entropy / uniform": r["entropy_ratio"], "mean distance (tokens)": r["mean_distance"],
               "first-token share": r["first_token_share"], "previous-token share": r.get("previous_token_share")}
              for r in stats], "head_stats_table",
             {"entropy (nats)": "{:.3f}", "entropy / uniform": "{:.3f}", "mean distance (tokens)": "{:.2f}",
              "first-token share": "{:.3f}", "previous-token share": "{:.3f}"})
    st.caption("Averaged over query positions 1..T-1. Entropy: 0 = looks at one token; 'entropy / uniform' = 1 "
               "spreads evenly. Mean distance: how far back a head looks. Previous-token share: the weight on the "
               "token just before, high in a previous-token head (half of an induction circuit).")


def sentence_views(tab: str) -> None:
    """The tabs that read the sentence's attention capture."""
    if tab == "head view":
        st.caption("Lines join each token (left) to the tokens it attends to (right); hover a token to isolate "
                   "it, click a head's colour to toggle it. Drawn offline; the buttons under it save it as SVG or PNG.")
        st.iframe(head_view_html(capture), height="content")
    elif tab == "model view":
        st.caption("Every layer (rows) and head (columns) at once; click a thumbnail to enlarge it.")
        st.iframe(model_view_html(capture), height="content")
    elif tab == "heatmaps":
        st.caption("Rows are queries, columns are keys; grey cells are hidden by the causal mask (a token cannot "
                   "look at later tokens).")
        ui.chart(attention_grid_figure(capture.attention, capture.tokens), "attn_grid")
    elif tab == "statistics":
        statistics()
    elif tab == "fine-tuning":
        finetuned.panel(info, capture, text, all_infos, "attn_ft")


for label, tab in tabs.items():
    if not tab.open:
        continue
    with tab:
        if label == "surgery":
            surgery.panel(info, loaded, text, examples, "attn_surgery")
        elif label == "long inputs":
            longinput.panel(info, loaded, text, "attn_long")
        elif capture is not None:
            sentence_views(label)
share.publish()
