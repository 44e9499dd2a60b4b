"""Plotly figures that put runs side by side: position maps (saliency beside attention), attention
before and after fine-tuning, per-token surprisal, probe accuracy, loss by position and by word
frequency, and a matched-budget race. Each function takes plain data and returns a Figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.inspect.plots import COLORS, add_position_heatmap, position_axes

LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.2))


def position_maps_figure(panels: dict[str, tuple[np.ndarray, Sequence[str]]], *, value: str = "share",
                         axes: tuple[str, str] = ("prediction after", "input"),
                         max_label_tokens: int = 24) -> go.Figure:
    """(T, T) maps side by side in the attention-heatmap style, one panel per entry
    title -> (map, tokens): say an LSTM's saliency shares, a Transformer's, and one of its heads."""
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.04, subplot_titles=list(panels))
    for col, (title, (z, tokens)) in enumerate(panels.items(), start=1):
        add_position_heatmap(fig, z, tokens, 1, col, name=title, showscale=col == 1, value=value, axes=axes)
    longest = max((len(tokens) for _, tokens in panels.values()), default=0)
    position_axes(fig, longest, max_label_tokens)
    fig.update_layout(height=420, **LAYOUT)
    return fig


def attention_difference_figure(before: np.ndarray, after: np.ndarray, tokens: Sequence[str], *,
                                title: str = "", max_label_tokens: int = 24) -> go.Figure:
    """One head's (T, T) attention before and after fine-tuning, and after - before (blue: more
    attention now, red: less)."""
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.04, subplot_titles=["before", "after", "after - before"])
    add_position_heatmap(fig, before, tokens, 1, 1, name="before", showscale=True)
    add_position_heatmap(fig, after, tokens, 1, 2, name="after")
    add_position_heatmap(fig, after - before, tokens, 1, 3, name="after - before", signed=True, value="change")
    position_axes(fig, len(tokens), max_label_tokens)
    fig.update_layout(title=title or None, height=420, **LAYOUT)
    return fig


def surprisal_figure(rows: dict[str, tuple[Sequence[str], Sequence[float]]]) -> go.Figure:
    """Per-token surprisal (bits), one row per run (name -> (tokens, bits)), each token written in
    its cell: white = expected, dark red = surprising."""
    names = list(rows)
    width = max((len(bits) for _, bits in rows.values()), default=0)
    z = np.full((len(names), width), np.nan)
    text = [[""] * width for _ in names]
    for i, (tokens, bits) in enumerate(rows.values()):
        z[i, :len(bits)] = bits
        text[i][:len(tokens)] = list(tokens)
    fig = go.Figure(go.Heatmap(z=z, y=names, x=list(range(width)), text=text, texttemplate="%{text}",
                               colorscale="Reds", zmin=0, colorbar=dict(title="bits"), name="surprisal",
                               hovertemplate="%{y}<br>%{text}: %{z:.2f} bits<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="token #")
    fig.update_layout(height=120 + 50 * len(names), **LAYOUT)
    return fig


def lines_figure(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, x_title: str, y_title: str,
                 reference: float | None = None, log_x: bool = False) -> go.Figure:
    """One line per run (name -> (x, y)); `reference` draws a dashed level (chance, say)."""
    fig = go.Figure()
    for i, (name, (x, y)) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=list(x), y=list(y), name=name, mode="lines+markers",
                                 line=dict(color=COLORS[i % len(COLORS)])))
    if reference is not None:
        fig.add_hline(y=reference, line=dict(dash="dash", color="grey"))
    fig.update_layout(xaxis_title=x_title, yaxis_title=y_title, height=360, **LAYOUT)
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def probe_figure(tables: dict[str, Sequence[dict[str, Any]]], x: str = "distance", y: str = "accuracy",
                 chance: float | None = 0.5) -> go.Figure:
    """Probe accuracy per run (name -> rows of `agreement_accuracy` or `copy_accuracy`) against
    `x` ("distance", "attractors" or "length")."""
    series = {name: ([r[x] for r in rows], [r[y] for r in rows]) for name, rows in tables.items()}
    fig = lines_figure(series, x_title=x, y_title=y.replace("_", " "), reference=chance)
    fig.update_yaxes(range=[0, 1.05])
    return fig


def position_loss_figure(curves: dict[str, Sequence[float]]) -> go.Figure:
    """`loss_by_position` per run: loss (nats) against the tokens of context already read."""
    return lines_figure({name: (list(range(len(c))), c) for name, c in curves.items()},
                        x_title="position in the window (tokens of context)", y_title="loss (nats/token)")


def frequency_figure(tables: dict[str, Sequence[dict[str, Any]]]) -> go.Figure:
    """`perplexity_by_frequency` per run: grouped bars of perplexity per training-count bucket."""
    fig = go.Figure()
    for i, (name, rows) in enumerate(tables.items()):
        labels = ["unseen" if r["low"] == 0 else f"{r['low']:,}-{r['high'] - 1:,}" for r in rows]
        fig.add_trace(go.Bar(x=labels, y=[r["ppl"] for r in rows], name=name, marker_color=COLORS[i % len(COLORS)],
                             customdata=[r["tokens"] for r in rows],
                             hovertemplate="%{x}: ppl %{y:.1f} over %{customdata:,} tokens<extra></extra>"))
    fig.update_layout(barmode="group", xaxis_title="training count of the predicted token", yaxis_title="perplexity",
                      height=360, **LAYOUT)
    fig.update_yaxes(type="log")
    return fig


BUDGET_AXES = {"tokens": "training tokens", "train_flops": "training FLOPs", "elapsed_s": "training time (s)"}


def budget_figure(curves: dict[str, Sequence[dict[str, float]]], x: str = "tokens") -> go.Figure:
    """Validation loss per run (name -> `BudgetRun.val`) against tokens, FLOPs or wall time."""
    series = {name: ([p[x] for p in val], [p["val_loss"] for p in val]) for name, val in curves.items()}
    return lines_figure(series, x_title=BUDGET_AXES[x], y_title="validation loss (nats/token)", log_x=x == "train_flops")
