"""A run's status as the Runs page tells it: the card's word, unless the weights the card
vouches for cannot be read (a truncated or overwritten file), which the card cannot know."""

from __future__ import annotations

import streamlit as st
from safetensors import SafetensorError, safe_open

from labkit.runs import RunInfo, has_weights, run_status, weights_stamp

DAMAGED = "weights unreadable"


@st.cache_data(max_entries=256, show_spinner=False)
def _header_problem(path: str, stamp: tuple[int, int]) -> str | None:
    try:
        with safe_open(path, framework="pt") as f:  # reads the header only
            f.keys()
    except (SafetensorError, OSError) as e:
        return str(e)
    return None


def weights_problem(info: RunInfo) -> str | None:
    """Why the run's saved weights cannot be read, or None (also when it has none yet)."""
    if info.error or not has_weights(info):
        return None
    try:
        return _header_problem(str(info.run.weights_path), weights_stamp(info))
    except FileNotFoundError:  # deleted between the two looks
        return None


def status(info: RunInfo) -> str:
    """run_status, or DAMAGED for a run whose weights file is corrupt."""
    return DAMAGED if weights_problem(info) else run_status(info)
