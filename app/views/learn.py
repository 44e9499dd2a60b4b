"""Watch it learn: one run across its evaluations, from the snapshots training appends to the run
(labkit.inspect.timeline): a Transformer's heads on a fixed sentence at each step (attention,
entropy, previous-token share, induction score), probe scores on a synthetic corpus for either
family, beside the loss curve, so that the step where a copying head forms can be seen. A run
still training is followed live."""

from __future__ import annotations

import streamlit as st

from labkit.inspect import inside_plots
from labkit.inspect.curves import load_curves
from labkit.inspect.plots import attention_grid_figure, loss_figure
from labkit.inspect.timeline import MIN_RISE, Snapshot, largest_rise, read_timeline
from labkit.runs import model_label, run_status
from labkit.runs.timeline import timeline_path

import common
from panels import figures, share, ui

STATS = {"induction": ("induction score", "score", "score"),  # key -> (title, quantity, unit)
         "previous_token": ("previous-token share", "score", "weight"),
         "entropy": ("entropy", "entropy", "nats")}
CHANCE = {"agreement": 0.5}  # two verbs to choose from

st.title("Watch it learn")
share.begin()
st.markdown("At every evaluation, training appends a small snapshot of the model to its run: a Transformer's "
            "attention on one fixed sentence with each head's entropy, previous-token share and **induction score** "
            "(how well it copies a repeated sequence: the head that makes in-context learning possible), and, on "
            "labkit's synthetic corpora, a probe score for either family. Move the slider through training and "
            "watch heads specialise; a sudden jump in an induction score is a copying head forming.")
infos = common.lm_runs(common.runs())
if not infos:
    st.info(f"No language-model runs in `{common.root()}` yet: train one (`labkit pretrain --preset tiny "
            "--model transformer`) or use **Train demo models** on the Runs page.")
    st.stop()
by_name = {i.path.name: i for i in infos}
names = list(by_name)
recorded = [n for n in names if timeline_path(by_name[n].path).is_file()]  # a Transformer's first: it has heads
recorded.sort(key=lambda n: model_label(by_name[n].config) != "transformer")
name = ui.pick_run("Run", names, "learn_run", default=names.index(recorded[0]) if recorded else 0,
                   format_func=lambda n: f"{n} ({model_label(by_name[n].config)})", param="run")
if name is None:
    st.stop()
info = by_name[name]
common.quality_note(info)
live = run_status(info) == "running"


def jump(snapshots: list[Snapshot], key: str) -> str:
    """The head whose score rose most between two evaluations in a row, said in words."""
    if sum(1 for s in snapshots if s.head_stats and key in s.head_stats) < 2:
        return ""
    rise = largest_rise(snapshots, key)
    if rise is None:
        return f" No head's {STATS[key][0]} rose by {MIN_RISE} or more between two evaluations in a row."
    return (f" The largest rise of the {STATS[key][0]}: layer {rise.layer}, head {rise.head}, from {rise.before:.2f} "
            f"at step {rise.from_step:,} to {rise.after:.2f} at step {rise.to_step:,}.")


def heads_over_time(snapshots: list[Snapshot], at: Snapshot) -> None:
    stats = list(STATS)
    key = st.radio("Head statistic", stats, format_func=lambda k: STATS[k][0], horizontal=True, key="learn_stat",
                   index=stats.index(share.shared("statistic", "learn_stat", stats[0], share.choice(stats))))
    title, quantity, unit = STATS[key]
    steps = [s for s in snapshots if s.head_stats and key in s.head_stats]
    L, H = steps[0].head_stats[key].shape
    ui.chart(inside_plots.timeline_figure(snapshots, step=at.step, stats=[key], probes=False), "learn_stat_lines")
    if at.head_stats and key in at.head_stats:
        ui.chart(figures.grid_figure(at.head_stats[key], quantity=quantity, unit=unit, x_title="head", y_title="layer",
                                     x_labels=[f"H{h}" for h in range(H)], y_labels=[f"L{i}" for i in range(L)],
                                     title=f"{title} at step {at.step:,}"), "learn_stat_grid")
    st.caption("One line per head, over the evaluations; the dotted line is the step shown." + jump(snapshots, key))


@st.fragment(run_every=common.REFRESH_S if live else None)
def timeline() -> None:
    snapshots = read_timeline(info.path)
    if not snapshots:
        st.info(f"**{common.md_escape(name)}** has no timeline (yet): `labkit pretrain` and the demo models record "
                "one at each evaluation, for a Transformer, or for any model on a synthetic corpus. An RNN on "
                "real text, or a run trained before this existed, has none.")
        return
    if live:
        st.caption(f"Live: {name} is still training; new evaluations appear every {common.REFRESH_S:.0f} s.")
    index = len(snapshots) - 1
    if len(snapshots) > 1:
        indices = list(range(len(snapshots)))
        start = share.shared("step", f"learn_step::{name}", index,
                             share.choice(indices, [str(s.step) for s in snapshots]))  # the link names the step
        index = st.select_slider("Evaluation", options=indices, value=start,
                                 format_func=lambda i: f"step {snapshots[i].step:,}", key=f"learn_step::{name}")
    at = snapshots[index]
    loss = f", validation loss {at.val_loss:.3f} nats/token" if at.val_loss is not None else ""
    st.markdown(f"**Step {at.step:,}**" + (f" ({at.tokens_seen:,} tokens seen{loss})" if at.tokens_seen else loss))
    probes = [s for s in snapshots if s.probes]
    left, right = st.columns(2) if probes else (st.container(), None)
    with left:
        fig = loss_figure({name: load_curves(info.path)}, smoothing=0.6)
        fig.add_vline(x=at.step, line=dict(color="#1f2328", width=1, dash="dot"))
        ui.chart(fig, "learn_loss")
    if right is not None:
        with right:
            kinds = sorted({k for s in probes for k in s.probes})
            chance = CHANCE.get(kinds[0]) if len(kinds) == 1 else None
            ui.chart(inside_plots.timeline_figure(snapshots, step=at.step, stats=(), chance=chance), "learn_probes")
            st.caption("Probe accuracy on labkit's synthetic tests: agreement (is the verb's number that of a distant "
                       "subject?), copy or recall (continue a sequence seen earlier in the text).")
    if at.attention is not None:  # the whole width: a panel per head
        ui.chart(attention_grid_figure(at.attention, at.tokens), "learn_attention")
        st.caption(f"Every head's attention on the run's fixed sentence at step {at.step:,}: rows are queries, "
                   "columns keys.")
    elif not probes:
        st.caption("This snapshot holds no attention (an RNN records probe scores only).")
    if any(s.head_stats for s in snapshots):
        heads_over_time(snapshots, at)
    share.fragment_done()


timeline()
share.publish()
