"""Generate: sample text from one run, or from two side by side with the same prompt and seed."""

from __future__ import annotations

import streamlit as st

from labkit.errors import LabkitError
from labkit.generate import SamplingConfig, stream
from labkit.inspect.attention import clean_text
from labkit.inspect.plots import token_probability_figure
from labkit.runs import model_label

import common

NONE = "(none)"
st.title("Generate")
infos, _ = common.language_models()
if not infos:
    st.info(f"No language-model runs in `{common.root()}` yet: train one (`labkit pretrain --preset tiny`) "
            "or use **Train demo models** on the Runs page.")
    st.stop()

names = [i.path.name for i in infos]
labels = {i.path.name: f"{i.path.name} ({model_label(i.config)})" for i in infos}
c1, c2 = st.columns(2)
first = c1.selectbox("Run", names, format_func=labels.get, key="gen_run")
others = [NONE, *[n for n in names if n != first]]
default_second = next((n for n in others[1:] if model_label(infos[names.index(n)].config)
                       != model_label(infos[names.index(first)].config)), NONE)
second = c2.selectbox("Side by side with", others, index=others.index(default_second),
                      format_func=lambda n: labels.get(n, n), key="gen_run_b")
prompt = st.text_area("Prompt", value="the", key="gen_prompt", height=68)
s1, s2, s3, s4, s5 = st.columns(5)
temperature = s1.slider("temperature", 0.0, 2.0, 0.8, 0.05, key="gen_temp", help="0 = greedy")
top_k = s2.number_input("top-k (0 = off)", 0, 100_000, 0, key="gen_topk")
top_p = s3.slider("top-p", 0.05, 1.0, 0.9, 0.05, key="gen_topp")
seed = s4.number_input("seed", 0, 2**31 - 1, 1, key="gen_seed")
length = s5.slider("length (tokens)", 1, 300, 40, key="gen_len")
stop_at_eos = st.toggle("stop at <eos> (end of line)", value=True, key="gen_eos")

chosen = [first] + ([second] if second != NONE else [])
clicked = st.button("Generate", type="primary", key="gen_go")
columns = st.columns(len(chosen))

if clicked:
    results = {}
    try:
        config = SamplingConfig(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                                max_tokens=int(length), seed=int(seed), stop_at_eos=stop_at_eos)
    except LabkitError as e:
        st.error(str(e))
        st.stop()
    streams, slots = {}, {}
    for col, name in zip(columns, chosen):
        with col:
            st.subheader(labels[name])
            loaded = common.load(infos[names.index(name)])
            if loaded is None:
                continue
            try:
                streams[name] = (stream(loaded.model, loaded.tokenizer, clean_text(prompt), config), loaded)
            except LabkitError as e:
                st.error(str(e))
                continue
            slots[name] = st.empty()
    # Round-robin: both runs' tokens appear as they are made.
    texts = {name: [] for name in streams}
    pending = dict(streams)
    while pending:
        for name, (s, loaded) in list(pending.items()):
            try:
                token = next(s)
            except StopIteration:
                del pending[name]
                continue
            except LabkitError as e:
                st.error(f"{name}: {e}")
                del pending[name]
                continue
            texts[name].append(token.id)
            slots[name].markdown(common.md_escape(loaded.tokenizer.decode(texts[name])) + " ▌")
    for name, (s, loaded) in streams.items():
        results[name] = {"prompt": prompt, "prompt_tokens": len(s.prompt_ids), "tokens": list(s.tokens),
                         "text": loaded.tokenizer.decode([t.id for t in s.tokens]), "notices": list(s.notices),
                         "tokens_per_second": s.tokens_per_second, "stop_reason": s.stop_reason}
    st.session_state["generations"] = results
    st.rerun()  # draw the finished results below (the same code path as any later rerun)

results = {k: v for k, v in st.session_state.get("generations", {}).items() if k in chosen}
for col, name in zip(columns, chosen):
    r = results.get(name)
    if r is None:
        continue
    with col:
        st.subheader(labels[name])
        for notice in r["notices"]:
            st.caption(f"Note: {notice}")
        st.markdown(f"*{common.md_escape(r['prompt'].strip()[-300:])}* **→** "
                    f"{common.md_escape(r['text']) or '(nothing: the model ended the text at once)'}")
        st.caption(f"{len(r['tokens'])} tokens at {r['tokens_per_second']:.0f} tokens/s; stopped by "
                   f"{'<eos>' if r['stop_reason'] == 'eos' else 'the length limit'}.")
        if r["tokens"]:
            st.plotly_chart(token_probability_figure(r["tokens"]), key=f"gen_probs_{name}")
            with st.expander("Per-token table"):
                st.dataframe([{"#": i, "token": t.text, "p (model)": round(t.model_prob, 4),
                               "p (sampling)": round(t.prob, 4), "entropy (nats)": round(t.entropy, 3)}
                              for i, t in enumerate(r["tokens"])], hide_index=True, width="stretch",
                             key=f"gen_table_{name}")
if not results:
    st.caption("Same prompt and seed on both sides: the difference is the model. Bars show each "
               "token's probability under the model; the line is the entropy of its next-token "
               "distribution (how unsure it was).")
