"""Plotly figures that put runs side by side: position maps (saliency beside attention), attention
before and after fine-tuning, per-token surprisal, probe accuracy, loss by position and by word
frequency, and a matched-budget race. Each function takes plain data and returns a Figure in the
house style (labkit.inspect.style)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.inspect import style
from labkit.inspect.plots import COLORS, add_position_heatmap, position_axes

LEGEND = dict(orientation="h", y=-0.22)


def position_maps_figure(panels: dict[str, tuple[np.ndarray, Sequence[str]]], *, value: str = "share",
                         axes: tuple[str, str] = ("prediction after", "input"),
                         max_label_tokens: int = 24) -> go.Figure:
    """(T, T) maps side by side in the attention-heatmap style, one panel per entry
    title -> (map, tokens), each panel labelled with its own tokens: say an LSTM's saliency shares,
    a Transformer's, and one of its heads. One colour scale (0..1) and its colourbar."""
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.06, subplot_titles=list(panels))
    for col, (title, (z, tokens)) in enumerate(panels.items(), start=1):
        add_position_heatmap(fig, z, tokens, 1, col, name=title, showscale=col == 1, value=value, axes=axes)
    longest = max((len(tokens) for _, tokens in panels.values()), default=0)
    position_axes(fig, longest, max_label_tokens, cols=len(panels), axes=axes)
    for col, (_, tokens) in enumerate(panels.values(), start=1):  # each panel shows its own tokens
        fig.update_xaxes(showticklabels=len(tokens) <= max_label_tokens, row=1, col=col)
        fig.update_yaxes(showticklabels=len(tokens) <= max_label_tokens, row=1, col=col)
    fig.update_layout(legend=LEGEND)
    return style.apply(fig, height=470)


def attention_difference_figure(before: np.ndarray, after: np.ndarray, tokens: Sequence[str], *,
                                title: str = "", max_label_tokens: int = 24) -> go.Figure:
    """One head's (T, T) attention before and after fine-tuning (0..1, one colourbar), and
    after - before on the signed scale, zoomed to the largest change (blue: more attention now,
    red: less), with its own colourbar."""
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09, subplot_titles=["before", "after", "after - before"])
    diff = after - before
    top = float(np.nanmax(np.abs(np.tril(diff)))) if diff.size else 0.0
    add_position_heatmap(fig, before, tokens, 1, 1, name="before")
    add_position_heatmap(fig, after, tokens, 1, 2, name="after", showscale=True,
                         colorbar_x=fig.layout.xaxis2.domain[1] + 0.005)
    add_position_heatmap(fig, diff, tokens, 1, 3, name="after - before", signed=True, value="change",
                         showscale=True, zmax=max(top, 1e-3))
    position_axes(fig, len(tokens), max_label_tokens, cols=3)
    fig.update_layout(title=title or None, legend=LEGEND)
    return style.apply(fig, height=470)


def surprisal_figure(rows: dict[str, tuple[Sequence[str], Sequence[float]]], *,
                     top_bits: float | None = None) -> go.Figure:
    """Per-token surprisal (bits), one row per run (name -> (tokens, bits)), each token written in
    its cell: white = expected, dark red = surprising, on the scale `surprisal_html` uses too (up
    to `top_bits`, default the largest value shown)."""
    names = list(rows)
    width = max((len(bits) for _, bits in rows.values()), default=0)
    z = np.full((len(names), width), np.nan)
    text = [[""] * width for _ in names]
    for i, (tokens, bits) in enumerate(rows.values()):
        z[i, :len(bits)] = bits
        text[i][:len(tokens)] = [style.shorten(style.token_text(t), 10) for t in tokens]
    top = top_bits or (float(np.nanmax(z)) if np.isfinite(z).any() else 1.0)
    fig = go.Figure(go.Heatmap(z=z, y=names, x=list(range(width)), text=text, texttemplate="%{text}",
                               textfont=dict(size=style.TICK_SIZE), **style.scale("surprisal", zmax=top),
                               colorbar=style.colorbar("surprisal"), name="surprisal",
                               hovertemplate="%{y}<br>%{text}: %{z:.2f} bits<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="token position")
    fig.update_layout(legend=LEGEND)
    return style.apply(fig, height=150 + 55 * len(names))


def lines_figure(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, x_title: str, y_title: str,
                 reference: float | None = None, reference_label: str = "chance", log_x: bool = False) -> go.Figure:
    """One line per run (name -> (x, y)); `reference` draws a dashed, labelled level (chance, say)."""
    fig = go.Figure()
    for i, (name, (x, y)) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=list(x), y=list(y), name=name, mode="lines+markers",
                                 line=dict(color=COLORS[i % len(COLORS)], width=2), marker=dict(size=8)))
    if reference is not None:
        style.chance_line(fig, reference, reference_label)
    fig.update_layout(xaxis_title=x_title, yaxis_title=y_title, legend=LEGEND)
    if log_x:
        style.log_axis(fig, [v for x, _ in series.values() for v in x], axis="x")
    return style.apply(fig, height=380)


def probe_figure(tables: dict[str, Sequence[dict[str, Any]]], x: str = "distance", y: str = "accuracy",
                 chance: float | None = 0.5) -> go.Figure:
    """Probe accuracy per run (name -> rows of `agreement_accuracy` or `copy_accuracy`) against
    `x` ("distance", "attractors" or "length"), on 0..1 with the chance level."""
    series = {name: ([r[x] for r in rows], [r[y] for r in rows]) for name, rows in tables.items()}
    label = f"chance ({chance:.0%})" if chance is not None else "chance"
    fig = lines_figure(series, x_title=x, y_title=y.replace("_", " "), reference=chance, reference_label=label)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


def position_loss_figure(curves: dict[str, Sequence[float]]) -> go.Figure:
    """`loss_by_position` per run: loss (nats) against the tokens of context already read."""
    return lines_figure({name: (list(range(len(c))), c) for name, c in curves.items()},
                        x_title="position in the window (tokens of context)", y_title=style.loss_title())


def frequency_figure(tables: dict[str, Sequence[dict[str, Any]]]) -> go.Figure:
    """`perplexity_by_frequency` per run: grouped bars of perplexity per training-count bucket."""
    fig = go.Figure()
    values = []
    for i, (name, rows) in enumerate(tables.items()):
        labels = ["unseen" if r["low"] == 0 else f"{r['low']:,}-{r['high'] - 1:,}" for r in rows]
        values += [r["ppl"] for r in rows]
        fig.add_trace(go.Bar(x=labels, y=[r["ppl"] for r in rows], name=name, marker_color=COLORS[i % len(COLORS)],
                             customdata=[r["tokens"] for r in rows],
                             hovertemplate="%{x}: ppl %{y:.1f} over %{customdata:,} tokens<extra></extra>"))
    fig.update_layout(barmode="group", xaxis_title="training count of the predicted token",
                      yaxis_title="perplexity (log scale)", legend=LEGEND)
    style.log_axis(fig, values)
    return style.apply(fig, height=380)
