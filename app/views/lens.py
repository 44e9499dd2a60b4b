"""Logit lens: what a model would predict if it stopped at each layer, token by token, for both
families (a Transformer's residual stream, an RNN layer's hidden state, through the output layer)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from labkit.errors import LabkitError
from labkit.inspect import EmptyInput
from labkit.inspect import inside_plots as ip
from labkit.inspect.lens import layer_label
from labkit.inspect.style import token_text
from labkit.runs import model_label

import common
from panels import analyses, share, ui

st.title("Logit lens")
st.markdown("A model's output layer reads the top of the network. The **logit lens** feeds it each layer's state "
            "instead (a Transformer's residual stream after each block, through the final LayerNorm; an RNN "
            "layer's hidden state) and asks what it would predict there. Where in depth does the right next "
            "word appear, and how sure is each layer of it? At the top layer the lens is the model's own prediction.")
share.begin()
infos = common.language_models_or_stop()
by_name = {i.path.name: i for i in infos}
name = ui.pick_run("Run", list(by_name), "lens_run", format_func=lambda n: f"{n} ({model_label(by_name[n].config)})",
                   param="run")
if name is None:
    st.stop()
info = by_name[name]
common.quality_note(info)
examples = common.examples(info)
example = st.selectbox("Example sentence", examples, key="lens_example", index=examples.index(share.shared(
    "example", "lens_example", examples[0], share.choice(examples, [str(i) for i in range(len(examples))]))))
text = st.text_area("Sentence (type your own)", key=f"lens_text::{example}", height=80,
                    value=share.shared("text", f"lens_text::{example}", example, share.text()))
loaded = common.load(info)
if loaded is None:
    st.stop()
try:
    lens = common.analysis(analyses.lens, info, text)
except EmptyInput:
    st.info("Type a sentence to see what each layer predicts.")
    st.stop()
except LabkitError as e:
    st.error(str(e))
    st.stop()
for notice in lens.notices:
    st.warning(notice)

ui.chart(ip.lens_figure(lens), "lens_grid")
loss = -lens.target_logp.mean(1)  # (L,) nats per token, bottom layer first
right = (lens.target_rank == 1).mean(1)
st.caption("Each cell: the layer's likeliest next token (✓ when it is the actual next token), coloured by the "
           "probability the layer gives the actual next token; hover for its five likeliest. Column t has read "
           "<eos> and the sentence up to its token t; it predicts token t + 1. Mean loss by layer (bottom first): "
           + ", ".join(f"{layer_label(n)} {v:.2f} nats ({r:.0%} right)" for n, v, r in zip(lens.layer_names, loss, right))
           + ". The embeddings row reads the input words alone, before any layer has mixed in their context.")

T = len(lens.tokens)
position = st.select_slider("Position", options=list(range(T)), key=f"lens_position::{T}",
                            value=share.shared("position", f"lens_position::{T}", T - 1, share.choice(range(T))),
                            format_func=lambda t: f"{t}: {token_text(lens.tokens[t])} → {token_text(lens.target_tokens[t])}")
rows = []
for i in reversed(range(len(lens.layer_names))):
    row = {"layer": layer_label(lens.layer_names[i]), "rank of the actual next token": int(lens.target_rank[i][position]),
           "p(actual)": float(np.exp(lens.target_logp[i][position]))}
    row |= {f"guess {k + 1}": f"{token_text(w)} ({p:.2f})"
            for k, (w, p) in enumerate(zip(lens.top_tokens[i][position], lens.top_probs[i][position]))}
    rows.append(row)
ui.table(rows, "lens_table", {"p(actual)": "{:.3f}"})
st.caption(f"After reading “{token_text(lens.tokens[position])}” the actual next token is "
           f"“{token_text(lens.target_tokens[position])}”: each layer's five likeliest guesses, the top layer first.")
share.publish()
