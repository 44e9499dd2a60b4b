"""Compare: two language-model runs side by side (say an LSTM and a Transformer) on what a
perplexity hides: which input tokens a prediction leans on (saliency, beside the Transformer's
attention), how surprised each run is by every token of a text, how its loss falls with more
context, and whether it keeps a verb in agreement with a distant subject. The analyses are
labkit.inspect's; the test sentences labkit.data.synthetic's."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import streamlit as st

from labkit.data.corpora import wikitext2_lines
from labkit.data.lm import DataConfig, corpus_lines
from labkit.data.synthetic import agreement_items
from labkit.errors import LabkitError
from labkit.inspect import (
    MAX_TOKENS,
    EmptyInput,
    agreement_accuracy,
    capture_attention,
    compare_surprisal,
    loss_by_position,
    overall,
    saliency,
    surprisal_html,
)
from labkit.inspect.compare_plots import position_loss_figure, position_maps_figure, probe_figure, surprisal_figure
from labkit.runs import model_label, run_kind

import common

METHODS = {"gradient": "gradient × input", "occlusion": "occlusion"}
DISTANCES = (0, 2, 4, 6, 8, 10, 12)  # words between the subject and its verb
MAX_WINDOWS = 64  # windows read for the loss by position: enough for a smooth curve, fast on a CPU


# --- cached measurements (keyed on the run's path and weights stamp; `_run` is not hashed) ------
@st.cache_data(max_entries=4, show_spinner="Reading the validation text...")
def validation_lines(data: str) -> list[str]:
    """The validation lines of the corpus in a run's data config (JSON); WikiText-2 only from disk."""
    config = DataConfig.from_dict(json.loads(data))
    if config.corpus == "wikitext-2":
        return wikitext2_lines("valid", config.data_dir, download=False)
    return corpus_lines(config)["valid"]


@st.cache_data(max_entries=16, show_spinner="Measuring the loss by position...")
def position_curve(_run, path: str, stamp: tuple[int, int], data: str, block: int) -> tuple[list[float], int]:
    """(loss by position, windows read) on the first MAX_WINDOWS windows of the validation text."""
    stream = _run.tokenizer.encode_lines(validation_lines(data))
    windows = min(MAX_WINDOWS, (stream.numel() - 1) // block)
    return loss_by_position(_run.model, stream, block, max_windows=MAX_WINDOWS).tolist(), windows


@st.cache_data(max_entries=16, show_spinner="Scoring agreement...")
def agreement_table(_run, path: str, stamp: tuple[int, int], per_distance: int) -> list[dict]:
    return agreement_accuracy(_run.model, _run.tokenizer, agreement_items(per_distance, DISTANCES))


def unknown_words(tokenizer, items) -> list[str]:
    """The test sentences' words that the run's vocabulary lacks (they would read as <unk>)."""
    words = sorted({w for item in items for w in (*item.prefix.split(), item.correct, item.wrong)})
    return [w for w in words if tokenizer.unk_id is not None and tokenizer.unk_id in tokenizer.encode(w)]


def top_inputs(row: np.ndarray, tokens: list[str], k: int = 3) -> str:
    """The k input tokens with the largest share of one prediction's row."""
    order = np.argsort(-row, kind="stable")[:k]
    return ", ".join(f"{tokens[i]} ({row[i]:.2f})" for i in order if row[i] > 0)


# --- the runs -------------------------------------------------------------------------------
st.title("Compare")
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
name_a = c1.selectbox("Run A", names, index=names.index(next((n for n in names if not is_tf[n]), names[0])),
                      format_func=labels.get, key="cmp_run_a")
others = [n for n in names if n != name_a]
name_b = c2.selectbox("Run B", others, index=others.index(next((n for n in others if is_tf[n]), others[0])),
                      format_func=labels.get, key="cmp_run_b")
chosen = [name_a, name_b]
runs = {}
for name in chosen:
    loaded = common.load(by_name[name])
    if loaded is None:
        st.stop()
    runs[name] = loaded
corpora = {n: common.corpus(by_name[n]) for n in chosen}
if corpora[name_a] != corpora[name_b]:
    st.warning(f"Mismatched runs: **{name_a}** was trained on {corpora[name_a] or '?'} and **{name_b}** on "
               f"{corpora[name_b] or '?'}. Each reads the text with its own vocabulary (unknown words as "
               "<unk>); the loss by position needs one corpus and is left out.")

example = st.selectbox("Example sentence", common.examples(by_name[name_a]), key="cmp_example")
text = st.text_area("Sentence (type your own)", value=example, key=f"cmp_text::{example}", height=80)

saliency_tab, surprisal_tab, position_tab, agreement_tab = st.tabs(
    ["saliency vs attention", "surprisal", "loss by position", "agreement by distance"])


# --- saliency beside attention ----------------------------------------------------------------
def saliency_section() -> None:
    try:
        maps = {(n, m): saliency(r.model, r.tokenizer, text, method=m) for n, r in runs.items() for m in METHODS}
        captures = {n: capture_attention(r.model, r.tokenizer, text) for n, r in runs.items() if is_tf[n]}
    except EmptyInput:
        st.info("Type a sentence to see which tokens each run's predictions lean on.")
        return
    except LabkitError as e:
        st.error(str(e))
        return
    lengths = {n: len(maps[n, "gradient"].tokens) for n in chosen}
    if len(set(lengths.values())) > 1:
        st.error(f"Mismatched runs: they split the sentence into different tokens ({lengths[name_a]} for "
                 f"{name_a}, {lengths[name_b]} for {name_b}); compare runs with the same kind of tokenizer.")
        return
    for notice in maps[name_a, "gradient"].notices:
        st.warning(notice)
    tokens = maps[name_a, "gradient"].tokens
    T = len(tokens)
    digest = hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:12]
    left, right = st.columns([3, 2])
    position = T - 1
    if T > 1:
        position = left.select_slider("Explain the prediction after token", options=list(range(T)), value=T - 1,
                                      format_func=lambda i: f"{i}: {tokens[i]}", key=f"cmp_position::{digest}")
    heads = {}
    for n, cap in captures.items():
        options = [(layer, None) for layer in range(cap.n_layers)] + [
            (layer, head) for layer in range(cap.n_layers) for head in range(cap.n_heads)]
        heads[n] = right.selectbox(f"Attention of {n}", options, index=cap.n_layers - 1, key=f"cmp_head::{n}",
                                   format_func=lambda o: f"layer {o[0]}, " + ("mean of the heads" if o[1] is None
                                                                              else f"head {o[1]}"))
    if not captures:
        right.caption("Neither run is a Transformer: no attention to show beside the saliency.")

    cut = slice(0, position + 1)  # tokens 0..position: the last row is the chosen prediction
    attention = {}  # run -> (what is shown, (T, T) attention)
    for n, cap in captures.items():
        layer, head = heads[n]
        a = cap.attention[layer].mean(0) if head is None else cap.attention[layer, head]
        attention[n] = (f"attention, L{layer} " + ("mean" if head is None else f"H{head}"), a)
    rows = []
    for method, title in METHODS.items():
        panels = {f"{n}: {title}": (maps[n, method].shares()[cut, cut], tokens[cut]) for n in chosen}
        panels |= {f"{n}: {view}": (a[cut, cut], tokens[cut]) for n, (view, a) in attention.items()}
        st.markdown(f"**{title}**")
        st.plotly_chart(position_maps_figure(panels), key=f"cmp_saliency_{method}")
        for n in chosen:
            m = maps[n, method]
            rows.append({"run": n, "view": title, "explains": m.target_tokens[position],
                         "leans most on (share)": top_inputs(m.shares()[position], tokens)})
    for n, (view, a) in attention.items():
        rows.append({"run": n, "view": view, "explains": "",
                     "leans most on (share)": top_inputs(a[position], tokens)})
    st.dataframe(rows, hide_index=True, width="stretch", key="cmp_saliency_table")
    guess = ("the text's next token" if position < T - 1 else "each run's own top guess (the text ends here)")
    st.caption(f"Row t: the prediction after reading tokens 0..t; the bottom row is token {position} "
               f"({common.md_escape(tokens[position])}), explaining {guess}. Saliency rows are |score| shares "
               "(they add up to 1 like attention): gradient × input is one backward pass, occlusion the drop in "
               "log-probability when a token is replaced by <unk>. Attention is where a head looks; saliency is "
               "what the prediction depends on, for either family.")


# --- surprisal --------------------------------------------------------------------------------
def surprisal_section() -> None:
    try:
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
    st.html(surprisal_html(results))
    st.plotly_chart(surprisal_figure({n: (r.tokens, r.bits) for n, r in results.items()}), key="cmp_surprisal")
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


# --- loss by position -------------------------------------------------------------------------
def window_size() -> int:
    """The longest window both runs were trained on and a Transformer can read."""
    sizes = []
    for n in chosen:
        config = by_name[n].config or {}
        sizes.append(int((config.get("train") or {}).get("seq_len") or MAX_TOKENS))
        if is_tf[n]:
            sizes.append(int(config["model"].get("context_length") or MAX_TOKENS))
    return max(2, min(sizes))


def position_section() -> None:
    if corpora[name_a] != corpora[name_b]:
        st.info("The loss by position reads both runs on one validation text: pick two runs trained on the "
                f"same corpus (here {corpora[name_a] or '?'} and {corpora[name_b] or '?'}).")
        return
    block = window_size()
    data = json.dumps((by_name[name_a].config or {}).get("data") or {}, sort_keys=True)
    curves, windows = {}, 0
    try:
        for n, r in runs.items():
            curves[n], windows = position_curve(r, str(by_name[n].path), common.stamp(by_name[n]), data, block)
    except (LabkitError, ValueError, TypeError, OSError) as e:
        st.error(f"Cannot read the validation text of {corpora[name_a] or 'the corpus'}: {e}")
        return
    st.plotly_chart(position_loss_figure(curves), key="cmp_positions")
    late = slice(block // 2, block)
    falls = ", ".join(f"{n} by {c[0] - np.mean(c[late]):.2f} nats" for n, c in curves.items())
    best = min(curves, key=lambda n: np.mean(curves[n][late]))
    st.caption(f"{windows} windows of {block} tokens of the {corpora[name_a]} validation text, each read from a "
               f"fresh start (no earlier text, no carried RNN state): position t has seen t tokens. From position 0 "
               f"to the second half of the window the loss falls: {falls}; {best} is lower there.")


# --- agreement by distance --------------------------------------------------------------------
def agreement_section() -> None:
    per_distance = st.select_slider("Test sentences per distance", options=[10, 20, 50, 100, 200], value=20,
                                    key="cmp_agreement_n")
    items = agreement_items(per_distance, DISTANCES)
    example_item = items[-1]
    tables = {}
    for n, r in runs.items():
        unknown = unknown_words(r.tokenizer, items)
        if unknown:
            shown = ", ".join(unknown[:6]) + (", ..." if len(unknown) > 6 else "")
            st.warning(f"**{n}** does not know {len(unknown)} of the grammar's words ({shown}): it was trained on "
                       f"{corpora[n] or 'another corpus'}. Agreement is scored on runs trained on a synthetic "
                       "corpus (synthetic or synthetic-agreement).")
            continue
        try:
            tables[n] = agreement_table(r, str(by_name[n].path), common.stamp(by_name[n]), per_distance)
        except LabkitError as e:
            st.warning(f"**{n}**: {e}")
    if not tables:
        return
    st.plotly_chart(probe_figure(tables), key="cmp_agreement")
    scores = ", ".join(f"{n} {overall(rows):.0%}" for n, rows in tables.items())
    st.caption(f"Each test sentence is cut before its verb, and every noun between the subject and the verb has the "
               f"other number, as in \"{example_item.prefix} [{example_item.correct} / {example_item.wrong}]\". "
               f"A run is right when it gives the agreeing verb the higher probability; chance is 50% (dashed). "
               f"Overall: {scores}.")
    st.dataframe([{"run": n, "distance": r["distance"], "sentences": r["count"], "accuracy": round(r["accuracy"], 3),
                   "margin (nats)": round(r["margin"], 3)} for n, rows in tables.items() for r in rows],
                 hide_index=True, width="stretch", key="cmp_agreement_table")


with saliency_tab:
    saliency_section()
with surprisal_tab:
    surprisal_section()
with position_tab:
    position_section()
with agreement_tab:
    agreement_section()
