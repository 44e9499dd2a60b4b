"""One run's generation on the Generate page: the text after what the model actually read, each
token's probability, and the distribution of any step (click a bar, or the step slider) as the
model gave it and as the sampler drew from it."""

from __future__ import annotations

from typing import Any

import streamlit as st

from labkit.generate import Candidate, Stream
from labkit.inspect.attention import clean_text
from labkit.inspect.plots import next_token_figure, token_probability_figure
from labkit.inspect.style import shorten

import common
from panels import ui

PROMPT_CHARS = 300  # the end of a long prompt shown before the generated text


def result(s: Stream, tokenizer: Any, prompt: str) -> dict[str, Any]:
    """What a finished stream leaves to show: plain data, kept in the session across reruns."""
    read = tokenizer.decode(s.prompt_ids)
    typed = len(tokenizer.encode(clean_text(prompt)))
    return {"prompt_read": read if typed else "", "cut": typed > len(s.prompt_ids), "tokens": list(s.tokens),
            "text": tokenizer.decode([t.id for t in s.tokens]), "notices": list(s.notices),
            "tokens_per_second": s.tokens_per_second, "stop_reason": s.stop_reason}


def prompt_shown(r: dict[str, Any]) -> str:
    """The prompt as the model read it: its end, after an ellipsis where it was cut; never empty."""
    if not r["prompt_read"].strip():
        return "*(empty prompt: the model starts from <eos>, as at the start of a line)*"
    text, cut = r["prompt_read"].strip(), r["cut"]
    if len(text) > PROMPT_CHARS:  # start at a word
        tail = text[-PROMPT_CHARS:]
        text, cut = (tail[tail.find(" ") + 1:] if " " in tail else tail), True
    return f"*{'… ' if cut else ''}{common.md_escape(text)}*"


def show(name: str, r: dict[str, Any], settings: dict[str, Any], count: int) -> None:
    if "error" in r:
        st.error(r["error"])
        return
    for notice in r["notices"]:
        st.caption(f"Note: {notice}")
    st.markdown(f"{prompt_shown(r)} **→** {common.md_escape(r['text']) or '(nothing: the model ended the text at once)'}")
    tokens = r["tokens"]
    st.caption(f"{len(tokens)} tokens at {r['tokens_per_second']:.0f} tokens/s; stopped by "
               f"{'<eos>' if r['stop_reason'] == 'eos' else 'the length limit'}.")
    if not tokens:
        return
    event = ui.chart(token_probability_figure(tokens), f"gen_probs_{name}", select=True)
    key = f"gen_step::{name}::{count}"
    point = ui.clicked_point(event)
    if point is not None and st.session_state.get(f"{key}::clicked") != point.get("x"):
        st.session_state[f"{key}::clicked"] = point.get("x")  # a new click: move the slider there
        st.session_state[key] = int(point["x"])
    step = 0
    if len(tokens) > 1:
        step = st.select_slider("Step", options=list(range(len(tokens))), key=key,
                                format_func=lambda i: f"{i}: {shorten(tokens[i].text, 16)}")
    token = tokens[step]
    if token.top:
        context = shorten(" ".join(t.text for t in tokens[max(0, step - 4):step]), 40)
        title = f"step {step}: after “{context or '(the prompt)'}”, drew “{token.text}”"
        drawn = Candidate(token.id, token.text, token.model_prob, token.prob)
        ui.chart(next_token_figure(token.top, chosen=token.id, title=title, drawn=drawn), f"gen_next::{name}")
        st.caption(sampling_note(token.top, settings))
    with st.expander("Per-token table"):
        ui.table([{"#": i, "token": t.text, "p (model)": t.model_prob, "p (sampling)": t.prob, "entropy (nats)": t.entropy}
                  for i, t in enumerate(tokens)], f"gen_table_{name}",
                 {"p (model)": "{:.4f}", "p (sampling)": "{:.4f}", "entropy (nats)": "{:.3f}"})


def sampling_note(top: list[Any], settings: dict[str, Any]) -> str:
    """What the bars show, with this step's numbers."""
    mass = sum(c.model_prob for c in top)
    kept = sum(c.sampling_prob > 0 for c in top)
    head = (f"Grey: the model's own probabilities (temperature 1); its {len(top)} likeliest next tokens hold "
            f"{mass:.0%} of the total. ")
    if settings["temperature"] == 0:
        return head + "Purple: greedy decoding (temperature 0) takes the likeliest token, with probability 1."
    cuts = [f"top-k {settings['top_k']}"] if settings["top_k"] else []
    cuts += [f"top-p {settings['top_p']:g}"] if settings["top_p"] < 1 else []
    return (head + f"Purple: what was sampled from after temperature {settings['temperature']:g}"
            + (f" and {' and '.join(cuts)}" if cuts else "") + f": {kept} of these {len(top)} kept a chance, "
            "the others were cut to 0. The drawn token is marked ◀.")
