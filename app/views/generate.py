"""Generate: sample text from one run, or from two side by side with the same prompt and seed, and
look at any step's next-token distribution: what the model proposed, and what temperature, top-k
and top-p left of it to sample from."""

from __future__ import annotations

import time

import streamlit as st

from labkit.errors import LabkitError
from labkit.generate import SamplingConfig, stream
from labkit.inspect.attention import clean_text
from labkit.runs import model_label

import common
from panels import generation, share, ui

NONE = "(none)"
RESULTS = "generations"  # session key: the last press's results, errors included, kept across reruns

st.title("Generate")
st.markdown("A language model writes one token at a time: at each step it gives every token of its vocabulary a "
            "probability, one is drawn, and it is fed back in. **Temperature** divides the logits before the "
            "softmax (below 1 sharpens the distribution, above 1 flattens it, 0 always takes the likeliest "
            "token); **top-k** keeps only the k likeliest tokens and **top-p** the smallest set whose "
            "probability adds up to p. Same prompt and seed on both sides: the difference is the model.")
share.begin()
infos = common.language_models_or_stop()

by_name = {i.path.name: i for i in infos}
names = list(by_name)
labels = {n: f"{n} ({model_label(i.config)})" for n, i in by_name.items()}
c1, c2 = st.columns(2)
first = ui.pick_run("Run", names, "gen_run", format_func=labels.get, where=c1, param="run")
others = [NONE, *[n for n in names if n != first]]
other_family = next((n for n in others[1:] if first and model_label(by_name[n].config) != model_label(by_name[first].config)),
                    NONE)
second = ui.pick_run("Side by side with", others, "gen_run_b", default=others.index(other_family), taken=first,
                     format_func=lambda n: labels.get(n, n), where=c2, param="with")
prompt = st.text_area("Prompt", key="gen_prompt", height=68,
                      value=share.shared("prompt", "gen_prompt", "the", share.text()))
s1, s2, s3, s4, s5 = st.columns(5)
temperature = s1.slider("temperature", 0.0, 2.0, share.shared("temperature", "gen_temp", 0.8, share.number(0, 2, step=0.05)),
                        0.05, key="gen_temp", help="0 = greedy")
top_k = s2.number_input("top-k (0 = off)", 0, 100_000, share.shared("top_k", "gen_topk", 0, share.number(0, 100_000, whole=True)),
                        key="gen_topk")
top_p = s3.slider("top-p", 0.05, 1.0, share.shared("top_p", "gen_topp", 0.9, share.number(0.05, 1, step=0.05)), 0.05,
                  key="gen_topp")
seed = s4.number_input("seed", 0, 2**31 - 1, share.shared("seed", "gen_seed", 1, share.number(0, 2**31 - 1, whole=True)),
                       key="gen_seed", help="The same seed draws the same text again")
length = s5.slider("length (tokens)", 1, 300, share.shared("length", "gen_len", 40, share.number(1, 300, whole=True)),
                   key="gen_len")
stop_at_eos = st.toggle("stop at <eos> (end of line)", value=share.shared("eos", "gen_eos", True, share.FLAG), key="gen_eos")

chosen = [n for n in (first, second) if n not in (None, NONE)]
for name in chosen:
    common.quality_note(by_name[name])
clicked = st.button("Generate", type="primary", key="gen_go", disabled=not chosen)
header = st.empty()
columns = st.columns(max(len(chosen), 1))


def settings() -> dict:
    return {"temperature": float(temperature), "top_k": int(top_k), "top_p": float(top_p), "seed": int(seed),
            "max_tokens": int(length), "stop_at_eos": stop_at_eos}


def run_all(config: SamplingConfig) -> dict[str, dict]:
    """Every chosen run's generation, streamed into its column as it comes (round-robin)."""
    results: dict[str, dict] = {}
    streams, slots = {}, {}
    for col, name in zip(columns, chosen):
        with col:
            st.subheader(labels[name])
            loaded, problem = common.try_load(by_name[name])
            try:
                if loaded is not None:
                    streams[name] = (stream(loaded.model, loaded.tokenizer, clean_text(prompt), config), loaded)
                    slots[name] = st.empty()
            except LabkitError as e:
                problem = f"**{name}**: {e}"
            if problem:
                results[name] = {"error": problem}
    ids: dict[str, list[int]] = {name: [] for name in streams}
    pending = dict(streams)
    waiting = st.empty()  # the place in the server's line, when a token has to wait for a slot
    while pending:
        for name, (s, loaded) in list(pending.items()):
            try:
                with common.computing(waiting):  # a slot per token: sessions generating at once take turns
                    token = next(s)
            except StopIteration:
                del pending[name]
                continue
            except LabkitError as e:
                results[name] = {"error": f"**{name}** stopped: {e}"}
                del pending[name]
                continue
            ids[name].append(token.id)
            slots[name].markdown(common.md_escape(loaded.tokenizer.decode(ids[name])) + " ▌")
    for name, (s, loaded) in streams.items():
        results.setdefault(name, generation.result(s, loaded.tokenizer, prompt))
    return results


if clicked:
    try:
        config = SamplingConfig(**settings())
    except LabkitError as e:
        st.session_state[RESULTS] = {"runs": {}, "error": str(e)}
    else:
        count = st.session_state.get(RESULTS, {}).get("count", 0) + 1
        st.session_state[RESULTS] = {"runs": run_all(config), "settings": settings(), "count": count,
                                     "at": time.strftime("%H:%M:%S")}
    st.rerun()  # draw the finished results below (the same code path as any later rerun)

last = st.session_state.get(RESULTS) or {}
if last.get("error"):
    st.error(last["error"])
shown = {k: v for k, v in last.get("runs", {}).items() if k in chosen}
if shown:
    header.caption(f"Generation {last['count']} at {last['at']}, seed {last['settings']['seed']} (the same seed "
                   "draws the same text: change it for another).")
for col, name in zip(columns, chosen):
    if name in shown:
        with col:
            st.subheader(labels[name])
            generation.show(name, shown[name], last["settings"], last["count"])
if not shown:
    st.caption("Press **Generate**: the text streams in, then a chart of each token's probability; click a "
               "token (or use the step slider) to see the distribution it was drawn from.")
share.publish()
