"""The text a run was trained on, read again for views that need more than a sentence: the loss
by position and by word frequency (Compare), long inputs (Attention). Cached per corpus; a corpus
labkit downloads (WikiText-2, WikiText-103, IMDB) is read from disk only, never downloaded by a page."""

from __future__ import annotations

import json

import streamlit as st

from labkit.data.lm import DataConfig, corpus_lines
from labkit.runs import RunInfo


def data_key(info: RunInfo) -> str:
    """The run's data config as sorted JSON: what the cached readers are keyed on."""
    return json.dumps((info.config or {}).get("data") or {}, sort_keys=True)


@st.cache_data(max_entries=8, show_spinner="Reading the corpus...")
def lines(data: str, split: str) -> list[str]:
    """The lines of one split ("train", "valid") of the corpus in a run's data config (`data_key`)."""
    config = DataConfig.from_dict(json.loads(data))
    return list(corpus_lines(config, download=False)[split])


def opening(info: RunInfo, words: int) -> str:
    """About the first `words` words of the run's validation text, as one string."""
    out: list[str] = []
    for line in lines(data_key(info), "valid"):
        out += line.split()
        if len(out) >= words:
            break
    return " ".join(out[:words])
