"""Figures of the app's own views (surgery, the logit lens, long inputs, the timeline), drawn in
the house style of labkit.inspect.style: one colour scale per quantity with its unit, token
labels that can be read, axis titles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from labkit.inspect import style


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
