"""Plotly figures for the app and the notebooks: loss curves, attention heatmaps, per-token
probabilities, and fine-tuning results. Each function takes plain data and returns a Figure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from labkit.inspect.curves import RunCurves, ema

COLORS = qualitative.Plotly


def _faint(color: str, alpha: float = 0.25) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def loss_figure(curves: dict[str, RunCurves], *, x_title: str = "step", y_title: str = "loss",
                smoothing: float = 0.6, log_y: bool = False, show_val: bool = True) -> go.Figure:
    """Per run: the raw training curve (faint), its smoothed curve, and validation points.

    Trace names: "<run>" (smoothed), "<run> (raw)", "<run> val"."""
    fig = go.Figure()
    for i, (name, c) in enumerate(curves.items()):
        color = COLORS[i % len(COLORS)]
        if c.train.x:
            if smoothing > 0:
                fig.add_trace(go.Scatter(x=c.train.x, y=c.train.y, name=f"{name} (raw)", mode="lines",
                                         line=dict(color=_faint(color), width=1), legendgroup=name,
                                         showlegend=False, hoverinfo="skip"))
            fig.add_trace(go.Scatter(x=c.train.x, y=ema(c.train.y, smoothing), name=name, mode="lines",
                                     line=dict(color=color, width=2), legendgroup=name))
        if show_val and c.val.x:
            fig.add_trace(go.Scatter(x=c.val.x, y=c.val.y, name=f"{name} val", mode="markers+lines",
                                     marker=dict(color=color, size=8, symbol="diamond",
                                                 line=dict(color="white", width=1)),
                                     line=dict(color=color, width=1, dash="dot"), legendgroup=name))
    fig.update_layout(xaxis_title=x_title, yaxis_title=y_title, height=460, hovermode="x unified",
                      margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.18))
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def attention_grid_figure(attention: np.ndarray, tokens: Sequence[str], *,
                          max_label_tokens: int = 24) -> go.Figure:
    """A layer x head grid of attention heatmaps (query rows, key columns); the positions the
    causal mask hides (key after query) are drawn in grey."""
    L, H, T, _ = attention.shape
    fig = make_subplots(rows=L, cols=H, horizontal_spacing=0.02, vertical_spacing=0.04,
                        subplot_titles=[f"L{layer} H{head}" for layer in range(L) for head in range(H)])
    for layer in range(L):
        for head in range(H):
            add_position_heatmap(fig, attention[layer, head], tokens, layer + 1, head + 1,
                                 name=f"L{layer} H{head}", showscale=layer == 0 and head == 0)
    position_axes(fig, T, max_label_tokens)
    fig.update_layout(height=max(300, 230 * L + (60 if T <= max_label_tokens else 0)),
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def add_position_heatmap(fig: go.Figure, z: np.ndarray, tokens: Sequence[str], row: int, col: int, *,
                         name: str, showscale: bool = False, signed: bool = False, value: str = "weight",
                         axes: tuple[str, str] = ("query", "key")) -> None:
    """One (T, T) map of query/prediction rows over key/input columns into subplot (row, col), the
    positions a causal model cannot read (column after row) in grey. 0..1 in blues, or with
    `signed` -1..1 from red through white to blue (a difference)."""
    T = z.shape[0]
    masked = np.triu(np.ones((T, T), dtype=bool), k=1)
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    scale = dict(zmin=-1, zmax=1, zmid=0, colorscale="RdBu") if signed else dict(zmin=0, zmax=1, colorscale="Blues")
    fig.add_trace(go.Heatmap(z=np.where(masked, np.nan, z), x=labels, y=labels, **scale, showscale=showscale,
                             name=name, colorbar=dict(title=value, len=0.5),
                             hovertemplate=f"{axes[0]} %{{y}}<br>{axes[1]} %{{x}}<br>{value} %{{z:.3f}}<extra></extra>"),
                  row=row, col=col)
    fig.add_trace(go.Heatmap(z=np.where(masked, 1.0, np.nan), x=labels, y=labels, showscale=False, name="causal mask",
                             colorscale=[[0, "#d9d9d9"], [1, "#d9d9d9"]], hoverinfo="skip"),
                  row=row, col=col)


def position_axes(fig: go.Figure, n_tokens: int, max_label_tokens: int) -> None:
    """Token labels on the axes of position heatmaps (when few enough to read), rows top down."""
    show_labels = n_tokens <= max_label_tokens
    fig.update_xaxes(showticklabels=show_labels, tickfont=dict(size=8), tickangle=-60)
    fig.update_yaxes(autorange="reversed", showticklabels=show_labels, tickfont=dict(size=8))


def head_stats_figure(stats: list[dict[str, float]]) -> go.Figure:
    """Small layer x head heatmaps: entropy relative to uniform (0..1), mean attention distance
    (tokens), first-token share (0..1), and the induction score (0..1) when the rows have one."""
    if not stats:
        return go.Figure()
    L = max(r["layer"] for r in stats) + 1
    H = max(r["head"] for r in stats) + 1
    top_distance = max(1.0, max(r["mean_distance"] for r in stats))
    panels = [("entropy / uniform", "entropy_ratio", "Viridis", 1.0),
              ("mean attention distance", "mean_distance", "Viridis", top_distance),
              ("first-token share", "first_token_share", "Reds", 1.0)]
    if all("induction_score" in r for r in stats):
        panels.append(("induction score", "induction_score", "Greens", 1.0))
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.08, subplot_titles=[p[0] for p in panels])
    for col, (_, key, scale, zmax) in enumerate(panels, start=1):
        z = np.zeros((L, H))
        for r in stats:
            z[r["layer"], r["head"]] = r[key]
        fig.add_trace(go.Heatmap(z=z, x=[f"H{h}" for h in range(H)], y=[f"L{layer}" for layer in range(L)],
                                 colorscale=scale, zmin=0.0, zmax=zmax, showscale=False, name=key,
                                 texttemplate="%{z:.2f}",
                                 hovertemplate=f"%{{y}} %{{x}}<br>{key} %{{z:.3f}}<extra></extra>"),
                      row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=120 + 40 * L, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def token_probability_figure(tokens: Sequence[Any], title: str = "") -> go.Figure:
    """Each generated token's probability (bars: sampled and under the model) and the entropy
    of the model's next-token distribution (line, right axis). `tokens`: GeneratedToken-likes."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x = list(range(len(tokens)))
    text = [t.text for t in tokens]
    fig.add_trace(go.Bar(x=x, y=[t.model_prob for t in tokens], name="p (model)", text=text,
                         textposition="outside", textangle=-60, marker_color="#4C78A8",
                         hovertemplate="%{text}<br>p(model) %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=[t.prob for t in tokens], name="p (sampling)", mode="markers",
                             marker=dict(color="#F58518", size=7), customdata=text,
                             hovertemplate="%{customdata}<br>p(sampling) %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=[t.entropy for t in tokens], name="entropy (nats)", mode="lines+markers",
                             line=dict(color="#54A24B"), customdata=text,
                             hovertemplate="%{customdata}<br>entropy %{y:.2f} nats<extra></extra>"),
                  secondary_y=True)
    fig.update_yaxes(title_text="probability", range=[0, 1.15], secondary_y=False)
    fig.update_yaxes(title_text="entropy (nats)", secondary_y=True, rangemode="tozero")
    fig.update_xaxes(title_text="generated token #", range=[-0.5, max(len(tokens), 10) - 0.5])
    fig.update_layout(title=title or None, height=380, bargap=0.15, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def confusion_matrix_figure(matrix: Sequence[Sequence[float]], labels: Sequence[str] | None = None) -> go.Figure:
    """Rows: true class; columns: predicted class; counts written in the cells."""
    z = np.asarray(matrix, dtype=float)
    labels = list(labels) if labels else [str(i) for i in range(z.shape[0])]
    fig = go.Figure(go.Heatmap(z=z, x=[f"pred {x}" for x in labels], y=[f"true {y}" for y in labels],
                               colorscale="Blues", texttemplate="%{z:.0f}", showscale=False,
                               name="confusion matrix"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def learning_curve_figure(points: Sequence[dict[str, Any]], x: str = "train_size",
                          y: str = "accuracy") -> go.Figure:
    """Fine-tuning runs as points (one per run) of `y` against `x`, joined per model."""
    fig = go.Figure()
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        if isinstance(p.get(x), (int, float)) and isinstance(p.get(y), (int, float)) and math.isfinite(p[y]):
            groups.setdefault(str(p.get("model", "runs")), []).append(p)
    for i, (model, pts) in enumerate(groups.items()):
        pts = sorted(pts, key=lambda p: p[x])
        fig.add_trace(go.Scatter(x=[p[x] for p in pts], y=[p[y] for p in pts], name=model,
                                 mode="lines+markers", text=[p.get("run", "") for p in pts],
                                 marker=dict(size=9, color=COLORS[i % len(COLORS)]),
                                 hovertemplate="%{text}<br>%{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(xaxis_title=x.replace("_", " "), yaxis_title=y, height=360,
                      margin=dict(l=10, r=10, t=30, b=10))
    if any(p[x] > 0 for pts in groups.values() for p in pts):
        fig.update_xaxes(type="log")
    return fig


def metric_curve_figure(x: Sequence[float], y: Sequence[float], *, name: str, x_title: str = "step") -> go.Figure:
    """One metric of one run against steps (e.g. a fine-tuning run's validation accuracy)."""
    fig = go.Figure(go.Scatter(x=list(x), y=list(y), name=name, mode="lines+markers"))
    fig.update_layout(xaxis_title=x_title, yaxis_title=name, height=300, margin=dict(l=10, r=10, t=30, b=10))
    return fig
