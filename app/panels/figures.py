"""Figures of the app's own views (surgery, the logit lens, long inputs, the timeline), drawn in
the house style of labkit.inspect.style: one colour scale per quantity with its unit, token
labels that can be read, axis titles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from labkit.inspect import style


def marker_scale(quantity: str, **kw: Any) -> dict[str, Any]:
    """style.scale's heatmap arguments (zmin, zmax, zmid) as a marker's (cmin, cmax, cmid)."""
    return {("c" + k[1:] if k.startswith("z") else k): v for k, v in style.scale(quantity, **kw).items()}


def effect_figure(tokens: Sequence[str], delta: np.ndarray, base: np.ndarray, ablated: np.ndarray, *,
                  title: str) -> go.Figure:
    """Per predicted token: the change in log-probability (nats) when a part is switched off, the
    bars coloured on the signed scale (red: the token lost probability, the part helped it)."""
    top = max(float(np.abs(delta).max()) if len(delta) else 0.0, 1e-3)
    labels = style.tick_labels(tokens)
    fig = go.Figure(go.Bar(
        x=labels, y=delta, name="change in log p",
        marker=dict(color=delta, **marker_scale("change", zmax=top), colorbar=style.colorbar("change", title="Δ log p (nats)")),
        customdata=np.stack([np.exp(base), np.exp(ablated)], axis=-1),
        hovertemplate="%{x}<br>p %{customdata[0]:.3f} → %{customdata[1]:.3f}<br>Δ log p %{y:+.3f} nats<extra></extra>"))
    fig.add_hline(y=0, line=dict(color=style.CHANCE, width=1))
    fig.update_xaxes(title_text="predicted token", tickangle=-45)
    fig.update_yaxes(title_text="Δ log p (nats): switched off − intact")
    fig.update_layout(title=title)
    return style.apply(fig, height=400)


def grid_figure(z: np.ndarray, *, quantity: str, unit: str, x_title: str, y_title: str, title: str = "",
                x_labels: Sequence[str] | None = None, y_labels: Sequence[str] | None = None,
                text: Sequence[Sequence[str]] | None = None, zmax: float | None = None) -> go.Figure:
    """A heatmap of one quantity (layer x head, layer x token, ...), its colourbar naming the unit,
    each cell's value (or `text`) written in it when there are few cells."""
    rows, cols = z.shape
    few = rows * cols <= 400
    cells = dict(text=text, texttemplate="%{text}") if text is not None else dict(texttemplate="%{z:.2f}") if few else {}
    fig = go.Figure(go.Heatmap(
        z=z, x=list(x_labels) if x_labels is not None else None, y=list(y_labels) if y_labels is not None else None,
        **style.scale(quantity, zmax=zmax), colorbar=style.colorbar(quantity, title=unit), name=quantity,
        textfont=dict(size=style.TICK_SIZE), **cells,
        hovertemplate=f"{y_title} %{{y}}, {x_title} %{{x}}<br>%{{z:.3f}} {unit}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text=y_title)
    fig.update_xaxes(title_text=x_title)
    fig.update_layout(title=title or None)
    return style.apply(fig, height=max(260, 140 + 48 * rows))


def bars_figure(labels: Sequence[str], values: Sequence[float], *, x_title: str, y_title: str, title: str = "") -> go.Figure:
    """Values per named part (units, say), largest first as given."""
    fig = go.Figure(go.Bar(x=list(labels), y=list(values), name=y_title, marker_color=style.LINE_COLORS[0],
                           hovertemplate="%{x}: %{y:+.4f}<extra></extra>"))
    fig.update_xaxes(title_text=x_title, type="category")
    fig.update_yaxes(title_text=y_title)
    fig.update_layout(title=title or None)
    return style.apply(fig, height=340)


def series_figure(x: Sequence[float], series: dict[str, Sequence[float]], *, x_title: str, y_title: str,
                  marker: float | None = None, y_range: tuple[float, float] | None = None,
                  chance: float | None = None) -> go.Figure:
    """Lines over training steps (one per head or probe), a dotted vertical line at `marker`."""
    fig = go.Figure()
    for i, (name, y) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=list(x), y=list(y), name=name, mode="lines+markers",
                                 line=dict(color=style.LINE_COLORS[i % len(style.LINE_COLORS)], width=2),
                                 marker=dict(size=7)))
    if marker is not None:
        fig.add_vline(x=marker, line=dict(color=style.INK, width=1, dash="dot"))
    if chance is not None:
        style.chance_line(fig, chance, f"chance ({chance:.0%})")
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title, **({"range": list(y_range)} if y_range else {}))
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return style.apply(fig, height=360)


def long_attention_figure(matrix: np.ndarray, edges: Sequence[int], *, title: str) -> go.Figure:
    """Attention over a long input, pooled into blocks of tokens: cell (i, j) is the mean weight a
    query in block i puts on a key in block j. Zoom with the mouse; hover names the token ranges."""
    spans = [f"{a}–{b - 1}" for a, b in zip(edges[:-1], edges[1:])]
    T = len(spans)
    masked = np.where(np.triu(np.ones((T, T), dtype=bool), k=1), np.nan, matrix)
    positive = masked[np.isfinite(masked) & (masked > 0)]
    top = float(np.quantile(positive, 0.99)) if positive.size else 1.0
    fig = go.Figure(go.Heatmap(
        z=masked, x=spans, y=spans, colorscale=style.COLORSCALES["attention"].colorscale, zmin=0, zmax=max(top, 1e-6),
        colorbar=style.colorbar("attention", title="mean weight"), name="attention",
        hovertemplate="queries %{y}<br>keys %{x}<br>mean weight %{z:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="query tokens")
    fig.update_xaxes(title_text="key tokens")
    fig.update_layout(title=title)
    return style.apply(fig, height=720)


def by_head(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    """A (layers, heads) array of one value from rows {"layer", "head", key, ...}."""
    L = max(r["layer"] for r in rows) + 1
    H = max(r["head"] for r in rows) + 1
    z = np.full((L, H), np.nan)
    for r in rows:
        z[r["layer"], r["head"]] = r[key]
    return z


def lens_figure(tokens: Sequence[str], targets: Sequence[str], layer_names: Sequence[str],
                top_tokens: Sequence[Sequence[Sequence[str]]], top_probs: Sequence[Sequence[Sequence[float]]],
                target_logp: np.ndarray) -> go.Figure:
    """The logit lens as a layer x position grid, the top layer on top: each cell names the layer's
    likeliest next token and is coloured by the probability it gives the actual next token."""
    L, T = target_logp.shape
    order = list(range(L))[::-1]  # the top layer first
    p = np.exp(target_logp[order])
    text = [[style.shorten(style.token_text(top_tokens[i][t][0]), 8) + (" ✓" if top_tokens[i][t][0] == targets[t] else "")
             for t in range(T)] for i in order]
    hover = [[f"reads {style.token_text(tokens[t])}, next is {style.token_text(targets[t])}<br>"
              + "<br>".join(f"{style.token_text(w)} {q:.3f}" for w, q in zip(top_tokens[i][t], top_probs[i][t]))
              for t in range(T)] for i in order]
    fig = go.Figure(go.Heatmap(
        z=p, x=style.tick_labels(tokens), y=[f"{i}: {layer_names[i]}" for i in order], text=text,
        texttemplate="%{text}" if T <= 40 else None, textfont=dict(size=style.TICK_SIZE), customdata=hover,
        **style.scale("probability"), colorbar=style.colorbar("probability", title="p(actual next token)"),
        name="logit lens", hovertemplate="%{y}<br>%{customdata}<extra></extra>"))
    fig.update_xaxes(title_text="input token (the prediction is of the token after it)", tickangle=-45)
    fig.update_yaxes(title_text="layer read")
    return style.apply(fig, height=max(300, 170 + 60 * L))
