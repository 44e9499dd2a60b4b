"""Loss curves: training and validation curves of several runs, overlaid; live while a run trains."""

from __future__ import annotations

import streamlit as st

from labkit.inspect.curves import METRICS, X_AXES, load_curves
from labkit.inspect.plots import loss_figure
from labkit.runs import run_status

import common
from panels import share, ui

st.title("Loss curves")
share.begin()
infos = common.lm_runs(common.runs())
common.note_unreadable(common.runs())
if not infos:
    st.info(f"No language-model runs in `{common.root()}` yet: train one (`labkit pretrain --preset "
            "tiny`) or use **Train demo models** on the Runs page.")
    st.stop()

names = [i.path.name for i in infos]
chosen = st.multiselect("Runs", names, key="curve_runs",
                        default=share.shared("runs", "curve_runs", names[:6], share.choices(names)))
c1, c2, c3, c4 = st.columns([2, 2, 1, 3])
axes, metrics, units = list(X_AXES), list(METRICS), ["nats", "bits"]
x_axis = c1.radio("x axis", axes, horizontal=True, key="curve_x",
                  index=axes.index(share.shared("x", "curve_x", axes[0], share.choice(axes, [X_AXES[a] for a in axes]))))
metric = c2.radio("y axis", metrics, horizontal=True, key="curve_metric",
                  index=metrics.index(share.shared("y", "curve_metric", metrics[0], share.choice(metrics))))
unit = "nats"
if metric == "loss":
    unit = c2.radio("loss in", units, horizontal=True, key="curve_unit",
                    index=units.index(share.shared("unit", "curve_unit", "nats", share.choice(units))),
                    help="Per token: nats use the natural log (what training minimises), bits log2 (1 nat = 1.44 bits).")
log_y = c3.toggle("log y", value=share.shared("log_y", "curve_log", False, share.FLAG), key="curve_log")
show_val = c3.toggle("validation", value=share.shared("validation", "curve_val", True, share.FLAG), key="curve_val")
smoothing = c4.slider("smoothing (TensorBoard's de-biased EMA)", 0.0, 0.99, key="curve_smooth",
                      value=share.shared("smoothing", "curve_smooth", 0.6, share.number(0, 0.99, step=0.01)), step=0.01,
                      help="Each point becomes w * previous + (1 - w) * value, divided by 1 - w^n so the "
                           "start is not pulled to zero. The raw curve stays faint behind it.")
selected = [i for i in infos if i.path.name in chosen]
live = [i.path.name for i in selected if run_status(i) == "running"]
for info in selected:
    common.quality_note(info)


@st.fragment(run_every=common.REFRESH_S if live else None)
def chart() -> None:
    curves = {i.path.name: load_curves(i.path, x_axis, metric) for i in selected}
    if live:
        st.caption(f"Live: {', '.join(live)} still training; the chart refreshes every "
                   f"{common.REFRESH_S:.0f} s.")
    empty = [n for n, c in curves.items() if not c.train.x and not c.val.x]
    if empty:
        st.caption(f"No records yet: {', '.join(empty)}.")
    if not selected:
        st.info("Pick one or more runs.")
        return
    ui.chart(loss_figure(curves, x_title=x_axis, y_title=metric, smoothing=smoothing, log_y=log_y, show_val=show_val,
                         unit=unit), "loss_chart")


chart()
share.publish()
