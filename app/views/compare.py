"""Compare: two language-model runs side by side (say an LSTM and a Transformer) on what a
perplexity hides: which input tokens a prediction leans on (saliency, beside the Transformer's
attention), how surprised each run is by every token of a text, how its loss falls with more
context and with rarer words, whether it keeps a verb in agreement with a distant subject, and
what switching a part of each off does (surgery). The analyses are labkit.inspect's; the test
sentences labkit.data.synthetic's. Only the open tab is computed."""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

from labkit.errors import LabkitError
from labkit.inspect import MAX_TOKENS, EmptyInput, compare_surprisal, surprisal_html
from labkit.inspect.compare_plots import position_maps_figure, surprisal_figure
from labkit.runs import model_label, run_kind

import common
from panels import analyses, corpus_views, share, surgery, ui
from panels.corpus_views import Pair

METHODS = {"gradient": "gradient × input", "occlusion": "occlusion"}
TABS = ["saliency vs attention", "surprisal", "loss by position", "word frequency", "agreement by distance", "surgery"]


def top_inputs(row: np.ndarray, tokens: list[str], k: int = 3) -> str:
    """The k input tokens with the largest share of one prediction's row."""
    order = np.argsort(-row, kind="stable")[:k]
    return ", ".join(f"{tokens[i]} ({row[i]:.2f})" for i in order if row[i] > 0)


# --- the runs -------------------------------------------------------------------------------
st.title("Compare")
share.begin()
infos, all_infos = common.language_models()
classifiers = sorted(i.path.name for i in all_infos if not i.error and run_kind(i) == "classifier")
if classifiers:
    st.caption(f"Not language models, not shown: {', '.join(classifiers)} (fine-tuned classifiers predict a "
               "label, not the next token: compare the runs they were fine-tuned from).")
if len(infos) < 2:
    have = f" ({', '.join(i.path.name for i in infos)})" if infos else ""
    st.info(f"Compare needs two language-model runs with weights, and `{common.root()}` has {len(infos)}{have}: "
            "train an LSTM and a Transformer (`labkit pretrain --preset tiny`, then with `--model transformer`), "
            "or use **Train demo models** on the Runs page.")
    st.stop()

by_name = {i.path.name: i for i in infos}
names = list(by_name)
labels = {n: f"{n} ({model_label(by_name[n].config)})" for n in names}
is_tf = {n: model_label(by_name[n].config) == "transformer" for n in names}
c1, c2 = st.columns(2)
name_a = ui.pick_run("Run A", names, "cmp_run_a", default=names.index(next((n for n in names if not is_tf[n]), names[0])),
                     format_func=labels.get, where=c1, param="a")
others = [n for n in names if n != name_a]
name_b = ui.pick_run("Run B", others, "cmp_run_b", default=others.index(next((n for n in others if is_tf[n]), others[0])),
                     taken=name_a, format_func=labels.get, where=c2, param="b")
if name_a is None or name_b is None:
    st.stop()
chosen = [name_a, name_b]
for name in chosen:
    common.quality_note(by_name[name])
runs = {}
for name in chosen:
    loaded = common.load(by_name[name])
    if loaded is None:
        st.stop()
    runs[name] = loaded
pair = Pair({n: by_name[n] for n in chosen}, runs, {n: is_tf[n] for n in chosen})
corpora = pair.corpora
if corpora[name_a] != corpora[name_b]:
    st.warning(f"Mismatched runs: **{name_a}** was trained on {corpora[name_a] or '?'} and **{name_b}** on "
               f"{corpora[name_b] or '?'}. Each reads the text with its own vocabulary (unknown words as "
               "<unk>); the loss by position and by word frequency need one corpus and are left out.")

examples = common.examples(by_name[name_a])
example = st.selectbox("Example sentence", examples, key="cmp_example", index=examples.index(share.shared(
    "example", "cmp_example", examples[0], share.choice(examples, [str(i) for i in range(len(examples))]))))
text = st.text_area("Sentence (type your own)", key=f"cmp_text::{example}", height=80,
                    value=share.shared("text", f"cmp_text::{example}", example, share.text()))
side = {name_a: "a", name_b: "b"}  # how the link names each run's controls

share.tab("tab", "cmp_tab", TABS)
tabs = dict(zip(TABS, st.tabs(TABS, key="cmp_tab", on_change="rerun")))


# --- saliency beside attention ----------------------------------------------------------------
def saliency_section() -> None:
    try:
        maps = {(n, m): common.analysis(analyses.saliency_map, by_name[n], text, m) for n in runs for m in METHODS}
        captures = {n: common.analysis(analyses.attention, by_name[n], text) for n in runs if is_tf[n]}
    except EmptyInput:
        st.info("Type a sentence to see which tokens each run's predictions lean on.")
        return
    except LabkitError as e:
        st.error(str(e))
        return
    tokens = {n: maps[n, "gradient"].tokens for n in chosen}
    shared = tokens[name_a] == tokens[name_b]
    if not shared:
        st.info(f"The runs split the sentence into different tokens ({len(tokens[name_a])} for {name_a}, "
                f"{len(tokens[name_b])} for {name_b}): each panel is labelled with its own run's tokens, and each run "
                "has its own position to explain.")
    for notice in maps[name_a, "gradient"].notices:
        st.warning(notice)
    digest = hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:12]
    left, right = st.columns([3, 2])
    position = {}
    for n in ([name_a] if shared else chosen):
        own, T = tokens[n], len(tokens[n])
        at = T - 1
        if T > 1:
            key = f"cmp_position::{digest}" + ("" if shared else f"::{n}")
            start = share.shared("position" if shared else f"position_{side[n]}", key, T - 1, share.choice(range(T)))
            at = left.select_slider("Explain the prediction after token" + ("" if shared else f" ({n})"),
                                    options=list(range(T)), value=start, format_func=lambda i, own=own: f"{i}: {own[i]}",
                                    key=key)
        position |= dict.fromkeys(chosen if shared else [n], at)
    heads = {}
    for n, cap in captures.items():
        options = [(layer, None) for layer in range(cap.n_layers)] + [
            (layer, head) for layer in range(cap.n_layers) for head in range(cap.n_heads)]
        codes = [f"L{layer}" if head is None else f"L{layer}H{head}" for layer, head in options]
        start = share.shared(f"head_{side[n]}", f"cmp_head::{n}", options[cap.n_layers - 1], share.choice(options, codes))
        heads[n] = right.selectbox(f"Attention of {n}", options, index=options.index(start), key=f"cmp_head::{n}",
                                   format_func=lambda o: f"layer {o[0]}, " + ("mean of the heads" if o[1] is None
                                                                              else f"head {o[1]}"))
    if not captures:
        right.caption("Neither run is a Transformer: no attention to show beside the saliency.")

    cut = {n: slice(0, position[n] + 1) for n in chosen}  # tokens 0..position: the last row is the prediction
    attention = {}  # run -> (what is shown, (T, T) attention)
    for n, cap in captures.items():
        layer, head = heads[n]
        a = cap.attention[layer].mean(0) if head is None else cap.attention[layer, head]
        attention[n] = (f"attention, L{layer} " + ("mean" if head is None else f"H{head}"), a)
    rows = []
    for method, title in METHODS.items():
        panels = {f"{n}: {title}": (maps[n, method].shares()[cut[n], cut[n]], tokens[n][cut[n]]) for n in chosen}
        panels |= {f"{n}: {view}": (a[cut[n], cut[n]], tokens[n][cut[n]]) for n, (view, a) in attention.items()}
        st.markdown(f"**{title}**")
        ui.chart(position_maps_figure(panels), f"cmp_saliency_{method}")
        for n in chosen:
            m = maps[n, method]
            rows.append({"run": n, "view": title, "explains": m.target_tokens[position[n]],
                         "leans most on (share)": top_inputs(m.shares()[position[n]], tokens[n])})
    for n, (view, a) in attention.items():
        rows.append({"run": n, "view": view, "explains": "",
                     "leans most on (share)": top_inputs(a[position[n]], tokens[n])})
    ui.table(rows, "cmp_saliency_table")
    p = position[name_a]
    guess = ("the text's next token" if p < len(tokens[name_a]) - 1 else "each run's own top guess (the text ends here)")
    st.caption(f"Row t: the prediction after reading tokens 0..t; the bottom row is token {p} "
               f"({common.md_escape(tokens[name_a][p])}), explaining {guess}. Saliency rows are |score| shares "
               "(they add up to 1 like attention): gradient × input is one backward pass, occlusion the drop in "
               "log-probability when a token is replaced by <unk>. Attention is where a head looks; saliency is "
               "what the prediction depends on, for either family.")


# --- surprisal --------------------------------------------------------------------------------
def surprisal_section() -> None:
    try:
        with common.computing():
            results = compare_surprisal({n: (r.model, r.tokenizer) for n, r in runs.items()}, text,
                                        max_tokens=MAX_TOKENS)
    except EmptyInput:
        st.info("Type a sentence to see how surprised each run is by each of its tokens.")
        return
    except LabkitError as e:
        st.error(f"Mismatched runs: {e}" if "numbers of tokens" in str(e) else str(e))
        return
    a, b = results[name_a], results[name_b]
    if a.total_tokens > len(a.tokens):
        st.warning(f"The input has {a.total_tokens:,} tokens; showing the first {len(a.tokens)} (what both runs "
                   "read at once, after <eos>).")
    top = max((float(r.bits.max()) for r in results.values() if len(r.bits)), default=1.0)  # one scale for both
    st.html(surprisal_html(results, top_bits=top))
    ui.chart(surprisal_figure({n: (r.tokens, r.bits) for n, r in results.items()}, top_bits=top), "cmp_surprisal")
    unknown = {n: r.ids.count(runs[n].tokenizer.unk_id) for n, r in results.items()}
    if any(unknown.values()):
        st.caption("Read as <unk> (outside the run's vocabulary): " + ", ".join(
            f"{n} {k} of {len(results[n].ids)} tokens" for n, k in unknown.items()) + ". A run predicts <unk> "
            "for every word it lacks, so on such words it can look less surprised than one that knows them.")
    gap = a.bits - b.bits
    i = int(np.abs(gap).argmax())
    lower = name_a if a.mean_bits < b.mean_bits else name_b
    st.caption(f"Mean surprisal: {name_a} {a.mean_bits:.2f} bits/token (perplexity {2 ** a.mean_bits:,.1f}), "
               f"{name_b} {b.mean_bits:.2f} ({2 ** b.mean_bits:,.1f}): {lower} expects this text better. The "
               f"largest difference is at token {i} ({common.md_escape(a.tokens[i])}): {a.bits[i]:.2f} vs "
               f"{b.bits[i]:.2f} bits. Surprisal is -log2 P(token | the tokens before it), each read after <eos>.")


# --- surgery on both runs ----------------------------------------------------------------------
def surgery_section() -> None:
    st.caption("Switch a part of each run off and see, token by token, what its predictions lose: a Transformer's "
               "heads, an RNN's hidden units or a whole layer's state.")
    for col, n in zip(st.columns(2), chosen):
        with col:
            st.subheader(labels[n])
            surgery.panel(by_name[n], runs[n], text, common.examples(by_name[n]), f"cmp_surgery::{n}", narrow=True,
                          share_as=f"{side[n]}_")


SECTIONS = {"saliency vs attention": saliency_section, "surprisal": surprisal_section,
            "loss by position": lambda: corpus_views.position_section(pair),
            "word frequency": lambda: corpus_views.frequency_section(pair),
            "agreement by distance": lambda: corpus_views.agreement_section(pair), "surgery": surgery_section}
for label, tab in tabs.items():
    if tab.open:
        with tab:
            SECTIONS[label]()
share.publish()
