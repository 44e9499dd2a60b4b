"""Start: what labkit is, what each page teaches, and a path through them told with the numbers
of the user's own runs (or what to run to get them)."""

from __future__ import annotations

import math

import streamlit as st

from labkit.inspect import quality
from labkit.inspect.style import count
from labkit.runs import RunInfo, model_label, run_kind, run_status

import common
from pagemap import PAGES
from panels import share

# Streamlit's own icon font, served with the app: emoji would need a font the machine may not have.
DONE, TO_DO, WEAK = ":material/check_circle:", ":material/radio_button_unchecked:", ":material/warning:"


def number(card: dict | None, key: str) -> float | None:
    value = (card or {}).get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def val_ppl(info: RunInfo) -> float | None:
    return number(info.card, "best_val_ppl") or number(info.card, "test_ppl")


def step(done: bool, title: str, body: str, *links: tuple[str, str], runs: list[RunInfo] = ()) -> None:
    """A step of the path: ticked when done, unless one of the `runs` it rests on has not learned
    enough to show anything (labkit.inspect.quality): then a warning sign and why, instead."""
    weak = [w for w in (quality.warning(i, common.md_escape(i.path.name)) for i in runs) if w] if done else []
    with st.container(border=True):
        st.markdown(f"{WEAK if weak else DONE if done else TO_DO} **{title}**")
        st.markdown(body)
        for said in weak:
            st.warning(said, icon=WEAK)
        for columns, (page, label) in zip(st.columns(max(len(links), 1)), links):
            columns.page_link(page, label=f"Open {label}", icon=":material/arrow_forward:")


st.title("labkit")
share.begin()
st.markdown("A lab for learning how language models are **pretrained** on raw text and then **fine-tuned** on "
            "a labelled task, by training small ones and looking inside them: recurrent networks (LSTM, GRU) "
            "and Transformers, side by side. Every page reads the run directories in the runs folder "
            f"(`{str(common.root()).replace('`', '')}`, set in the sidebar): what it shows is your runs' own numbers.")

infos = common.runs()
readable = [i for i in infos if not i.error and run_status(i) not in ("incomplete", "unreadable")]
lms = [i for i in readable if run_kind(i) == "lm" and val_ppl(i) is not None]
classifiers = [i for i in readable if run_kind(i) == "classifier" and number(i.card, "accuracy") is not None]
transformers = [i for i in lms if model_label(i.config) == "transformer"]
rnns = [i for i in lms if model_label(i.config) != "transformer"]

st.header("A path through it")
if lms:
    best = min(lms, key=val_ppl)
    body = (f"You have {len(lms)} language-model run{'s' if len(lms) > 1 else ''}; the lowest validation "
            f"perplexity is **{val_ppl(best):,.1f}** ({common.md_escape(best.name)}, {model_label(best.config)}). "
            "Perplexity is e to the mean loss per token: how many words the model hesitates between, on average.")
else:
    body = ("No trained language model yet. **Train demo models** on the Runs page trains an LSTM and a "
            "Transformer and fine-tunes both (about 5 minutes on a quiet 2-core CPU with WikiText-2 and SST-2 on disk, "
            "seconds without them); or run `labkit pretrain "
            "--preset laptop` (and again with `--model transformer`) for models that learn WikiText-2 in 10 minutes.")
step(bool(lms), "1. Train the demo models", body, ("views/runs.py", "Runs"), ("views/curves.py", "Loss curves"),
     runs=lms)

if transformers:
    t = transformers[0]
    model = (t.config or {}).get("model") or {}
    layers, heads = model.get("n_layers"), model.get("n_heads")
    ok = all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in (layers, heads))
    size = (f"{count(layers, 'layer')} × {count(heads, 'head')}, {count(layers * heads, 'head')} in all" if ok
            else "its heads")
    body = (f"**{common.md_escape(t.name)}** has {size}. On Attention, see where each head looks on a sentence "
            "you type, and switch one off to see which predictions it carried; Watch it learn replays its "
            "heads over training.")
else:
    body = "This needs a Transformer run: the demo models include one."
step(bool(transformers), "2. Look at a head", body, ("views/attention.py", "Attention"),
     ("views/learn.py", "Watch it learn"), runs=transformers[:1])

if rnns and transformers:
    r, t = min(rnns, key=val_ppl), min(transformers, key=val_ppl)
    same = common.corpus(r) == common.corpus(t)
    lower = r if val_ppl(r) < val_ppl(t) else t
    body = (f"**{common.md_escape(r.name)}** ({model_label(r.config)}) reaches a validation perplexity of "
            f"{val_ppl(r):,.1f} and **{common.md_escape(t.name)}** (transformer) {val_ppl(t):,.1f}"
            + (f" on the same corpus ({common.corpus(r) or '?'}): {common.md_escape(lower.name)} is lower. "
               if same else " (trained on different corpora: the numbers do not compare). ")
            + "Compare shows where the difference comes from, token by token.")
else:
    body = "This needs an RNN run and a Transformer run (the demo models are one of each)."
step(bool(rnns and transformers), "3. Compare the families", body, ("views/compare.py", "Compare"),
     runs=[min(rnns, key=val_ppl), min(transformers, key=val_ppl)] if rnns and transformers else [])

if classifiers:
    best = max(classifiers, key=lambda i: number(i.card, "accuracy"))
    scratch = [i for i in classifiers if (i.card or {}).get("from_scratch")]
    body = (f"{len(classifiers)} fine-tuned run{'s' if len(classifiers) > 1 else ''}; the best test accuracy is "
            f"**{number(best.card, 'accuracy'):.1%}** ({common.md_escape(best.name)}; chance is 50% on two "
            "balanced classes).")
    if scratch and len(scratch) < len(classifiers):
        pre = max(number(i.card, "accuracy") for i in classifiers if i not in scratch)
        body += (f" Pretrained: {pre:.1%}; trained from scratch: {max(number(i.card, 'accuracy') for i in scratch):.1%}"
                 ": what pretraining bought.")
else:
    body = ("No fine-tuned run yet: `labkit finetune RUN` puts a classifier on a pretrained run and trains it on "
            "SST-2 (`--task number` for the synthetic task); `--from-scratch` trains the same model without "
            "pretraining, to compare.")
step(bool(classifiers), "4. Fine-tune", body, ("views/finetune.py", "Fine-tuning"), runs=classifiers)

st.header("The pages")
for page, label, teaches in PAGES[1:]:  # (the first is this page)
    left, right = st.columns([1, 4])
    left.page_link(page, label=label)
    right.markdown(teaches)
share.publish()
