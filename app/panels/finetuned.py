"""Attention before and after fine-tuning, on the Attention page: the pretrained run's heads beside
the same heads inside a classifier fine-tuned from it, on the same sentence. Which heads did the
task change (total variation per head), and how (before, after, and the difference map)?"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from labkit.errors import LabkitError
from labkit.inspect import AttentionCapture, attention_change
from labkit.inspect.compare_plots import attention_difference_figure
from labkit.runs import RunInfo, run_kind

import common
from panels import analyses, figures, share, ui
from panels.surgery import head_code


def fine_tuned_from(info: RunInfo, infos: list[RunInfo]) -> list[RunInfo]:
    """The classifier runs fine-tuned from `info`'s weights (not the from-scratch baselines)."""
    def base(i: RunInfo) -> str:
        return str((i.card or {}).get("base_run") or (i.config or {}).get("base_run") or "")

    return [i for i in infos if not i.error and run_kind(i) == "classifier" and base(i)
            and Path(base(i)).name == info.path.name and not (i.card or {}).get("from_scratch")]


def panel(info: RunInfo, before: AttentionCapture, text: str, all_infos: list[RunInfo], key: str) -> None:
    runs = fine_tuned_from(info, all_infos)
    if not runs:
        st.info(f"No classifier fine-tuned from **{common.md_escape(info.path.name)}** in this runs folder: "
                f"`labkit finetune {info.path.name}` makes one (SST-2; `--task number` needs no download). Its "
                "heads then show here beside the pretrained ones.")
        return
    by_name = {i.path.name: i for i in runs}
    name = ui.pick_run("Fine-tuned run", list(by_name), f"{key}_run", param="ft_run")
    if name is None:
        return
    loaded = common.load(by_name[name])
    if loaded is None:
        return
    try:
        after = common.analysis(analyses.attention, by_name[name], text)
        change = attention_change(before.attention, after.attention)  # (L, H)
    except LabkitError as e:
        st.error(f"**{name}** cannot be compared head by head with this run: {e}")
        return
    L, H = change.shape
    ui.chart(figures.grid_figure(change, quantity="score", unit="total variation", x_title="head", y_title="layer",
                                 x_labels=[f"H{h}" for h in range(H)], y_labels=[f"L{layer}" for layer in range(L)],
                                 title="how much each head's attention changed"), f"{key}_change")
    order = np.argsort(-change, axis=None)
    options = [(int(i // H), int(i % H)) for i in order]
    first = share.shared("ft_head", f"{key}_head::{name}", options[0], share.choice(options, list(map(head_code, options))))
    layer, head = st.selectbox("Head", options, key=f"{key}_head::{name}", index=options.index(first),
                               format_func=lambda o: f"layer {o[0]}, head {o[1]} (changed {change[o]:.2f})")
    ui.chart(attention_difference_figure(before.attention[layer, head], after.attention[layer, head], before.tokens,
                                         title=f"layer {layer}, head {head}: before and after fine-tuning"),
             f"{key}_difference")
    st.caption(f"Total variation between a head's attention rows before and after fine-tuning ({name}), averaged "
               "over the query positions: 0 = unchanged, 1 = it now looks at entirely different tokens. Heads are "
               "listed most changed first. In the difference map blue is more attention after fine-tuning, red less.")
