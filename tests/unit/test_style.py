"""labkit.inspect.style, the house style of every chart, and its use by every figure function of
labkit.inspect.plots, compare_plots and inside_plots (plain data in, no models, no files)."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import plotly.graph_objects as go
import pytest
from plotly.subplots import make_subplots

from labkit.generate import Candidate, GeneratedToken
from labkit.inspect import compare_plots as cp
from labkit.inspect import inside_plots as ip
from labkit.inspect import plots, style
from labkit.inspect.attention import LongAttention, head_stats
from labkit.inspect.curves import run_curves
from labkit.inspect.lens import Lens
from labkit.inspect.surgery import TokenEffect
from labkit.inspect.timeline import Snapshot


def test_one_scale_per_quantity_with_its_unit():
    assert style.scale("attention") == {"colorscale": "Blues", "zmin": 0.0, "zmax": 1.0}
    assert style.scale("surprisal", zmax=7.5) == {"colorscale": "Reds", "zmin": 0.0, "zmax": 7.5}
    assert style.scale("change") == {"colorscale": "RdBu", "zmin": -1.0, "zmax": 1.0, "zmid": 0.0}
    assert style.scale("change", zmax=0.2) == {"colorscale": "RdBu", "zmin": -0.2, "zmax": 0.2, "zmid": 0.0}
    assert style.scale("attention", zmax=9) == style.scale("attention")  # a fixed range stays fixed
    units = {q: style.unit(q) for q in ("attention", "surprisal", "entropy", "loss", "change", "share", "probability")}
    assert units == {"attention": "weight", "surprisal": "bits", "entropy": "nats", "loss": "nats",
                     "change": "change", "share": "share", "probability": "probability"}
    assert style.colorbar("surprisal")["title"]["text"] == "bits"
    assert style.colorbar("attention", title="share")["title"]["text"] == "share"
    with pytest.raises(KeyError, match="known: attention"):
        style.scale("temperature")


def test_apply_sets_readable_fonts_and_keeps_axis_titles():
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    fig.update_layout(xaxis_title="step", yaxis_title="loss (nats/token)")
    assert style.apply(fig, height=300) is fig
    assert fig.layout.font.size >= 12 and fig.layout.xaxis.tickfont.size >= 12 and fig.layout.yaxis.tickfont.size >= 12
    assert fig.layout.xaxis.title.text == "step" and fig.layout.yaxis.title.text == "loss (nats/token)"
    assert fig.layout.height == 300 and fig.layout.hoverlabel.font.size >= 12
    assert fig.layout.template.layout.paper_bgcolor == "white"


def test_chance_line_is_a_dashed_labelled_level():
    fig = style.chance_line(go.Figure(), 0.5, "chance (50%)")
    shape, = fig.layout.shapes
    assert shape.y0 == shape.y1 == 0.5 and shape.line.dash == "dash"
    assert [a.text for a in fig.layout.annotations] == ["chance (50%)"]


def test_export_configs_download_png_at_2x_and_svg_without_a_network():
    png, svg = style.EXPORT_CONFIG["toImageButtonOptions"], style.SVG_EXPORT_CONFIG["toImageButtonOptions"]
    assert (png["format"], png["scale"]) == ("png", 2) and svg["format"] == "svg"
    for config in (style.EXPORT_CONFIG, style.SVG_EXPORT_CONFIG):
        text = json.dumps(config)  # a plain JSON config (Streamlit and Jupyter pass it as JSON)
        assert "http" not in text and config["displayModeBar"] is True and not config["displaylogo"]
    with pytest.raises(ValueError, match="png"):
        style.export_config("gif")


def test_token_labels_are_numbered_visible_and_cut_with_an_ellipsis():
    assert style.tick_labels(["the", "extraordinarily", "", " ", "a\nb"], max_chars=6) == \
        ["0 the", "1 extra…", "2 ␣", "3 ␣", "4 a\\nb"]
    assert style.shorten("the quick brown fox", 12) == "the quick…"
    assert style.shorten("the quick brown fox", 40) == "the quick brown fox"
    assert style.shorten("abcdefghij", 5) == "abcd…"  # one long word: cut inside it, still marked


def test_log_ticks_are_written_out_in_full():
    assert style.log_ticks(4.2, 7.9) == [4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5]
    assert style.log_ticks(3, 300) == [5, 10, 20, 50, 100, 200]
    assert style.log_ticks(1, 1e6) == [1, 10, 100, 1000, 10_000, 100_000, 1_000_000]
    assert style.log_ticks(0, 5) == []
    fig = go.Figure(go.Scatter(y=[4.5, 6.0]))
    style.log_axis(fig, [4.5, 6.0])
    assert fig.layout.yaxis.type == "log"
    assert list(fig.layout.yaxis.ticktext) == ["4.6", "4.8", "5", "5.2", "5.4", "5.6", "5.8", "6"]
    style.log_axis(fig, np.arange(1, 1001), axis="x")  # numpy's integers count as numbers
    assert list(fig.layout.xaxis.tickvals) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] and fig.layout.xaxis.type == "log"
    style.log_axis(fig, [100, 100], axis="x")  # one value: its own tick, not plotly's bare 2, 3, ... 9
    assert list(fig.layout.xaxis.tickvals) == [100] and list(fig.layout.xaxis.ticktext) == ["100"]


# --- every figure function draws in the house style --------------------------------------------
def attention(T: int = 4) -> np.ndarray:
    a = np.tril(np.ones((T, T)))
    return np.broadcast_to(a / a.sum(1, keepdims=True), (2, 2, T, T)).copy()


RECORDS = [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0}, {"step": 2, "val_loss": 4.5}]
TOKENS = ["the", "cat", "sat", "."]


@functools.cache
def figures() -> dict[str, go.Figure]:
    stats = head_stats(attention(), induction=np.array([[0.1, 0.9], [0.3, 0.2]]))
    gen = [GeneratedToken(1, "the", 0.5, 2.0, 0.4, [Candidate(1, "the", 0.4, 0.5), Candidate(2, "cat", 0.3, 0.0)])]
    rows = {"lstm": [{"distance": 0, "accuracy": 0.9, "count": 4}]}
    return {
        "loss": plots.loss_figure({"a": run_curves(RECORDS)}, log_y=True),
        "grid": plots.attention_grid_figure(attention(), TOKENS),
        "head": plots.head_attention_figure(attention()[1, 0], TOKENS, layer=1, head=0),
        "stats": plots.head_stats_figure(stats),
        "tokens": plots.token_probability_figure(gen),
        "next": plots.next_token_figure(gen[0].top, chosen=1),
        "confusion": plots.confusion_matrix_figure([[3, 1], [0, 4]], ["neg", "pos"]),
        "learning": plots.learning_curve_figure([{"train_size": 50, "accuracy": 0.7, "condition": "scratch"}]),
        "metric": plots.metric_curve_figure([10], [0.6], name="validation accuracy"),
        "maps": cp.position_maps_figure({"a": (attention()[0, 0], TOKENS), "b": (attention()[0, 0], TOKENS[:3] + ["!"])}),
        "difference": cp.attention_difference_figure(attention()[0, 0], np.tril(np.ones((4, 4))) / 4, TOKENS),
        "surprisal": cp.surprisal_figure({"a": (TOKENS, [1.0, 2.0, 0.5, 3.0])}),
        "probe": cp.probe_figure(rows),
        "position": cp.position_loss_figure({"lstm": [3.0, 2.0]}),
        "frequency": cp.frequency_figure({"lstm": [{"low": 0, "high": 1, "ppl": 50.0, "tokens": 3}]}),
        **inside_figures(),
    }


def inside_figures() -> dict[str, go.Figure]:
    """labkit.inspect.inside_plots: the lens, surgery, long inputs and the timeline."""
    top = [[[["cat", "the"]] * 3] * 2][0]  # [L=2][T=3][k=2]
    lens = Lens(["<eos>", "the", "cat"], ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], [[[1, 2]] * 3] * 2, top,
                [[[0.6, 0.3]] * 3] * 2, np.log(np.full((2, 3), 0.5)), np.ones((2, 3), dtype=int), ["the", "cat", "sat"])
    effect = TokenEffect(TOKENS, [1, 2, 3, 4], np.zeros(4), np.array([-1.0, 0.5, 0.0, -0.2]), np.array([-1.0, 0.5, 0.0, -0.2]))
    stats = {"entropy": np.ones((2, 2)), "previous_token": np.full((2, 2), 0.5), "induction": np.eye(2)}
    snaps = [Snapshot(step, TOKENS, attention(), stats, {"copy": step / 10}) for step in (2, 4)]
    return {
        "lens": ip.lens_figure(lens),
        "effect": ip.token_effect_figure(effect),
        "importance": ip.head_importance_figure([{"layer": 0, "head": 1, "loss_increase": 0.3},
                                                 {"layer": 1, "head": 0, "loss_increase": -0.1}]),
        "units": ip.unit_importance_figure([{"layer": 0, "unit": 3, "loss_increase": 0.2}]),
        "long": ip.long_attention_figure(LongAttention(TOKENS, 1, "mean", attention()[0, 0], [0, 1, 2, 3, 4], 8)),
        "timeline": ip.timeline_figure(snaps, step=4),
    }


@pytest.mark.parametrize("name", list(figures()))
def test_every_figure_is_in_the_house_style(name):
    fig = figures()[name]
    assert fig.layout.template.layout.paper_bgcolor == "white" and fig.layout.font.size >= 12
    axes = [fig.layout[k] for k in fig.layout if k.startswith(("xaxis", "yaxis"))]
    assert axes and all(a.tickfont.size is None or a.tickfont.size >= 11 for a in axes)
    assert any(a.title.text for a in axes), "no axis title"
    for trace in fig.data:
        if isinstance(trace, go.Heatmap) and trace.showscale is not False and trace.name != "causal mask":
            assert trace.colorbar.title.text, f"{trace.name}: a colour scale without its unit"


def test_attention_maps_name_their_axes_and_keep_titles_apart():
    fig = plots.attention_grid_figure(attention(), TOKENS)
    assert [a.text for a in fig.layout.annotations] == ["layer 0, head 0", "layer 0, head 1", "layer 1, head 0",
                                                        "layer 1, head 1"]
    # token labels only under the bottom row and left of the first column: row 2's titles cannot
    # sit on row 1's labels
    assert [fig.layout[f"xaxis{i}"].showticklabels for i in ("", 2, 3, 4)] == [False, False, True, True]
    assert [fig.layout[f"yaxis{i}"].showticklabels for i in ("", 2, 3, 4)] == [True, False, True, False]
    assert fig.layout.xaxis3.title.text == "key" and fig.layout.yaxis.title.text == "query"
    assert list(fig.data[0].x) == ["0 the", "1 cat", "2 sat", "3 ."]
    assert fig.layout.xaxis3.tickfont.size >= 11 and fig.layout.xaxis3.tickfont.color == style.INK
    one = plots.head_attention_figure(attention()[1, 0], TOKENS, layer=1, head=0)
    assert one.layout.title.text == "layer 1, head 0" and not one.layout.annotations and one.data[0].name == "L1 H0"
    maps = figures()["maps"]
    assert list(maps.data[2].x)[-1] == "3 !"  # each panel its own tokens


def test_head_statistics_share_one_scale_each_with_a_colourbar():
    fig = figures()["stats"]
    heat = {t.name: t for t in fig.data}
    assert list(heat) == ["entropy_ratio", "mean_distance", "first_token_share", "previous_token_share",
                          "induction_score"]
    shares = [heat[k] for k in ("entropy_ratio", "first_token_share", "previous_token_share", "induction_score")]
    assert {(t.colorscale[0][1], t.zmin, t.zmax) for t in shares} == {(shares[0].colorscale[0][1], 0.0, 1.0)}
    assert heat["mean_distance"].colorbar.title.text == "tokens"
    assert len({round(t.colorbar.x, 3) for t in fig.data}) == 5  # side by side, not stacked on each other


def test_loss_axes_carry_the_unit_and_bits_convert():
    nats = plots.loss_figure({"a": run_curves(RECORDS)}, smoothing=0.0)
    bits = plots.loss_figure({"a": run_curves(RECORDS)}, smoothing=0.0, unit="bits")
    assert nats.layout.yaxis.title.text == "loss (nats/token)" and bits.layout.yaxis.title.text == "loss (bits/token)"
    assert list(bits.data[0].y) == pytest.approx([5 / math.log(2), 4 / math.log(2)])
    assert nats.data[1].marker.size >= 11  # validation markers stand out
    assert plots.loss_figure({"a": run_curves(RECORDS)}, y_title="perplexity").layout.yaxis.title.text == "perplexity"


def test_accuracy_charts_with_few_points_get_a_0_to_1_axis_and_a_chance_line():
    for fig in (figures()["learning"], figures()["metric"]):
        assert tuple(fig.layout.yaxis.range) == (0, 1.02)
        assert [s.line.dash for s in fig.layout.shapes] == ["dash"] and fig.layout.shapes[0].y0 == 0.5
    assert figures()["learning"].layout.xaxis.type == "log"
    assert tuple(figures()["metric"].layout.xaxis.range) == (9.0, 11.0)


def test_learning_curve_draws_one_line_per_condition():
    points = [{"train_size": n, "accuracy": a, "condition": c, "model": "tf"} for n, a, c in
              ((50, 0.6, "pretrained, full"), (500, 0.8, "pretrained, full"), (50, 0.5, "scratch"), (500, 0.55, "scratch"),
               (50, 0.62, "pretrained, frozen"))]
    fig = plots.learning_curve_figure(points)
    assert [(t.name, list(t.y)) for t in fig.data] == [("pretrained, frozen", [0.62]), ("pretrained, full", [0.6, 0.8]),
                                                       ("scratch", [0.5, 0.55])]
    two_models = points + [{"train_size": 50, "accuracy": 0.7, "condition": "scratch", "model": "lstm"}]
    assert "lstm · scratch" in [t.name for t in plots.learning_curve_figure(two_models).data]
    legacy = plots.learning_curve_figure([{"train_size": 50, "accuracy": 0.7, "model": "pretrained"}])
    assert [t.name for t in legacy.data] == ["pretrained"]


def test_generation_figures_label_tokens_flat_and_show_the_sampled_distribution():
    fig = figures()["tokens"]
    assert fig.data[0].textposition == "none" and list(fig.layout.xaxis.ticktext) == ["0 the"]
    nxt = figures()["next"]
    assert list(nxt.data[0].y) == ["the ◀", "cat"] and list(nxt.data[1].x) == [0.5, 0.0]


def test_surprisal_figure_and_html_share_one_colour_scale():
    from labkit.inspect.surprisal import Surprisal, surprisal_html

    fig = cp.surprisal_figure({"a": (["x", "y"], [0.0, 4.0])}, top_bits=4.0)
    assert fig.data[0].colorscale[0][1] == "rgb(255,245,240)" and fig.data[0].zmax == 4.0  # plotly's Reds
    html = surprisal_html({"a": Surprisal(["x", "y"], [1, 2], np.array([0.0, 4.0]), 2)}, top_bits=4.0)
    assert "background:rgb(255, 245, 240)" in html and "background:rgb(103, 0, 13)" in html


def test_inside_figures_put_the_top_layer_first_and_mark_the_step_shown():
    figs = inside_figures()
    lens = figs["lens"].data[0]
    assert list(lens.y) == ["block 1", "block 0"] and lens.colorbar.title.text == "p(actual next token)"
    # the top guess is "cat" everywhere; the actual next tokens are the, cat, sat: a tick at position 1 only
    assert list(lens.x) == ["0 <eos>", "1 the", "2 cat"] and [row[:3] for row in lens.text] == [["cat", "cat ✓", "cat"]] * 2
    # surgery: one colour meaning. The bars are each token's loss change (-Δ log p): a token whose log p
    # fell by 1 when the parts were switched off rose by 1 in loss; the heads' map is their loss rise;
    # both on the same red-for-a-rise scale, centred on 0.
    effect, importance = figs["effect"].data[0], figs["importance"].data[0]
    assert list(effect.y) == [1.0, -0.5, 0.0, 0.2] and list(effect.marker.color) == [1.0, -0.5, 0.0, 0.2]
    assert importance.z.tolist() == [[0.0, 0.3], [-0.1, 0.0]] and (importance.zmin, importance.zmax) == (-0.3, 0.3)
    assert effect.marker.colorscale == importance.colorscale and effect.marker.cmid == importance.zmid == 0
    assert importance.colorscale[-1][1] == "rgb(103,0,31)"  # RdBu reversed: the top (a loss rise) is dark red
    assert [list(row) for row in importance.text] == [["0", "+0.30"], ["-0.10", "0"]]
    timeline = figs["timeline"]
    assert [a.text.replace("<br>", " ") for a in timeline.layout.annotations if a.yref == "paper"] == [
        "induction score", "previous-token share", "attention entropy (nats)", "probe accuracy"]
    assert {s.x0 for s in timeline.layout.shapes} == {4} and len(timeline.layout.shapes) == 4
    copy = next(t for t in timeline.data if t.name == "copy")
    assert list(copy.x) == [2, 4] and list(copy.y) == [0.2, 0.4]


def test_titles_sit_under_the_toolbar_legends_below_the_data_and_panel_titles_wrap():
    fig = style.apply(go.Figure([go.Scatter(x=[0, 1], y=[0, 1], name="a"), go.Scatter(x=[0, 1], y=[1, 0], name="b")],
                                layout=dict(title="a title", legend=dict(y=1.1))))
    title, legend = fig.layout.title, fig.layout.legend
    assert (title.yref, title.y, title.yanchor, title.pad.t, title.x, title.xanchor) == \
        ("container", 1, "top", style.TITLE_PAD, 0, "left")
    assert fig.layout.margin.t == style.TITLE_PAD + 6 + 20  # the title's line under the toolbar, then the plot
    assert (legend.orientation, legend.yref, legend.y, legend.yanchor) == ("h", "container", 0, "bottom")
    # three panels side by side: each title wraps at 60 // 3 = 20 characters, at spaces
    panels = style.apply(make_subplots(rows=1, cols=3, subplot_titles=["demo-transformer: gradient × input", "b", "c"]))
    assert panels.layout.annotations[0].text == "demo-transformer:<br>gradient × input"
    assert panels.layout.margin.t == style.TOOLBAR_PX + 4 + 2 * 18  # the toolbar, then two lines of panel title
    assert style.wrap("one two three four", 9) == "one two<br>three<br>four"
    assert style.wrap("short", 9) == "short" and style.wrap("unbreakable-word", 4) == "unbreakable-word"


def test_numbers_keep_the_precision_they_need():
    assert [style.number(x) for x in (0.42, 0.0031, 2.1e-05, 123.456, 0.0)] == ["0.420", "0.00310", "2.10e-05", "123", "0"]
    assert style.number(0.012, signed=True) == "+0.0120" and style.number(-0.1, signed=True, digits=2) == "-0.10"
    assert style.count(1, "layer") == "1 layer" and style.count(1024, "token") == "1,024 tokens"


def test_next_token_bars_scale_to_the_data_and_show_a_drawn_token_outside_the_top():
    top = [Candidate(i, f"w{i}", 0.001, 0.0015) for i in range(10)]  # a flat distribution: 0.1% each
    drawn = Candidate(99, "rare", 0.0002, 0.0003)
    fig = plots.next_token_figure(top, chosen=99, drawn=drawn)
    assert fig.layout.xaxis.range == pytest.approx((0, 0.0015 * 1.12))  # not 0..1: the bars can be read
    assert list(fig.data[0].y)[-1] == "rare ◀ (drawn; not in the top 10)" and list(fig.data[0].x)[-1] == 0.0002
    inside = plots.next_token_figure(top, chosen=3, drawn=top[3])
    assert len(inside.data[0].y) == 10 and list(inside.data[0].y)[3] == "w3 ◀"
