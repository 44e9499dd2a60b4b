"""Runs: every run directory under the runs folder, its status, card and config; comparison of
configs; and the demo models for a fresh start."""

from __future__ import annotations

import json
import time

import streamlit as st

from labkit.demo import demo_progress, start_demo
from labkit.errors import LabkitError
from labkit.inspect.curves import load_curves
from labkit.inspect.plots import loss_figure
from labkit.inspect.run_tables import config_diff, drop_empty_columns, summary_row
from labkit.runs import STALE, RunInfo, run_kind, run_status

import common
from panels import share, status, ui

st.title("labkit runs")
share.begin()
FORMATS = {"parameters": "{:,.0f}", "steps": "{:,.0f}", "tokens seen": "{:,.0f}", "best val ppl": "{:,.2f}",
           "test ppl": "{:,.2f}", "accuracy": "{:.3f}", "wall time (s)": "{:,.1f}", "training time (s)": "{:,.1f}",
           "training FLOPs": "{:.3g}", "MFU": "{:.1%}"}
RESULTS = ("parameters", "steps", "tokens seen", "best val ppl", "test ppl", "accuracy", "wall time (s)",
           "training time (s)", "training FLOPs", "MFU")
root = common.root()


def row(info: RunInfo) -> dict:
    """The run's summary row, its status told by the weights too, and when the card was written."""
    summary = summary_row(info)
    problem = summary.pop("problem")
    return summary | {"status": status.status(info), "updated": ui.when((info.card or {}).get("updated_at")),
                      "problem": problem}


def card_rows(card: dict) -> list[dict]:
    """A results card as (field, value) rows: times as dates, numbers rounded, lists compact."""
    rows = []
    for key, value in card.items():
        if key.endswith("_at"):
            value = ui.when(value) or value
        elif isinstance(value, float):
            value = f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, separators=(", ", ": "))
        rows.append({"field": key, "value": str(value)})
    return rows


def demo_section() -> None:
    progress = demo_progress(root)
    running = bool(progress and progress.active)
    st.subheader("Demo models")
    st.write("Trains an LSTM and a Transformer language model, fine-tunes each on a sentence task, and trains the "
             "LSTM's network on that task from scratch (the fair test of what pretraining bought), into the runs "
             "folder. With WikiText-2 on disk: the demo recipes (two-layer Transformer), then SST-2 sentiment when its "
             "files are on disk, about 5 minutes in all on a quiet 2-core CPU; else tiny models on a small synthetic "
             "corpus that labkit generates, then the number of a noun phrase (seconds). Every run stops at a number of "
             "steps, not a time: a slower machine makes the same models, later. Then every page has something to show.")
    if common.class_mode():  # the teacher trains them on the server (`labkit demo`), not a student's click
        st.caption("Class mode: the teacher trains the demo models on the server (`labkit demo RUNS_FOLDER`).")
    if st.button("Train demo models", type="primary", disabled=running or common.class_mode(), key="train_demo"):
        try:
            start_demo(root)
        except (OSError, ValueError, LabkitError) as e:
            st.error(f"Cannot start the demo training in `{root}`: {e}")
        else:
            st.rerun()
    if progress is not None:
        demo_panel(running)


def demo_panel(running: bool) -> None:
    @st.fragment(run_every=common.REFRESH_S if running else None)
    def panel() -> None:
        p = demo_progress(root)
        if p is None:
            return
        if p.finished:
            st.success(f"Demo models ready ({p.corpus}): {', '.join(p.runs)}. Every page works on them. {p.describe()}")
        elif p.active:
            st.progress(p.fraction, text=p.describe())
            curves = {name: load_curves(root / name) for name in p.runs if (root / name).is_dir()}
            curves = {name: c for name, c in curves.items() if c.train.x or c.val.x}
            if curves:
                ui.chart(loss_figure(curves, smoothing=0.3), "demo_curves")
            else:
                st.caption("The live loss curve starts with the first logged training steps.")
        else:
            done = ", ".join(f"{name} {s:,}/{n:,} steps" for name, (s, n) in p.steps.items())
            st.error(f"The demo training stopped before finishing ({done}). Its log:")
            st.code(p.log_tail or "(empty)", language=None)
        if running and not p.active:
            st.rerun(scope="app")  # training ended: refresh the run table too

    panel()


job = demo_progress(root)
demo_first = job is not None and (job.active or time.time() - job.started_at < 900)  # started recently
infos = common.runs()
if not infos:
    if not (job and job.active):  # (a demo that is starting shows its own progress)
        st.info(f"No runs in `{root}` yet. Train one with `labkit pretrain --preset tiny` "
                "(or `--preset tiny --model transformer`), or press **Train demo models** below; "
                "or point the sidebar at another runs folder.")
    demo_section()
    st.stop()


if demo_first:
    demo_section()


@st.fragment(run_every=common.REFRESH_S if common.active(infos) else None)
def run_table() -> None:
    current = common.runs()
    ui.table(drop_empty_columns([row(i) for i in current]), "runs_table", FORMATS)
    for info in current:
        if info.error:
            st.warning(f"**{info.path.name}**: {info.error}")
        elif problem := status.weights_problem(info):
            st.warning(f"**{info.path.name}**: its card says {run_status(info)}, but its weights file cannot be "
                       f"read ({problem[:200]}): restore it, or train the run again.")
        elif run_status(info) == STALE:
            st.warning(f"**{info.path.name}**: its card says running, but the process that trained "
                       f"it (pid {info.card.get('pid')}) is gone: it was killed. "
                       f"`labkit pretrain --name {info.path.name} --resume` continues it.")
        elif run_status(info) == "incomplete":
            st.warning(f"**{info.path.name}**: has a config but no results card yet (training has "
                       "not started, or the run was cut short before its first record).")
        else:
            common.quality_note(info)


run_table()

readable = [i for i in infos if not i.error]
st.subheader("Compare runs")
names = [i.path.name for i in readable]
finished = sorted((i for i in readable if run_status(i) == "finished"), key=lambda i: run_kind(i) != "lm")
finished = [i.path.name for i in finished]
chosen = st.multiselect("Runs to compare", names, key="compare_runs", default=share.shared(
    "compare", "compare_runs", finished[:2] if len(finished) >= 2 else names[:2], share.choices(names)))
chosen_infos = [i for i in readable if i.path.name in chosen]
if len(chosen_infos) < 2:
    st.caption("Pick two or more runs: the table shows only the config fields that differ.")
else:
    diff = config_diff({i.path.name: i.config or {} for i in chosen_infos})
    summaries = {i.path.name: summary_row(i) for i in chosen_infos}
    results = [{"field": f"→ {field}", **{n: "" if r[field] is None else FORMATS[field].format(r[field])
                                          for n, r in summaries.items()}}
               for field in RESULTS if any(r[field] is not None for r in summaries.values())]
    st.caption("The config fields that differ between these runs (identical ones left out), then their "
               "results (→)." if diff else "These runs have identical configs; their results (→):")
    ui.table(diff + results, "config_diff")

st.subheader("Run details")
if readable:
    name = ui.pick_run("Run", names, key="detail_run", param="run")
    info = next((i for i in readable if i.path.name == name), None)
    if info is not None:
        st.markdown(f"Status: **{status.status(info)}**")
        common.quality_note(info)
        left, right = st.columns(2)
        with left:
            st.caption("results card")
            if info.card:
                ui.table(card_rows(info.card), "card_table")
            else:
                st.markdown("No results card yet.")
        with right:
            st.caption("config")
            st.json(info.config or {}, expanded=1)

if not demo_first:
    with st.expander("Demo models"):
        demo_section()
share.publish()
