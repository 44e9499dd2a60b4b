"""The one figure the app draws itself: a grid of one quantity (layer x head) at one moment, in
the house style of labkit.inspect.style. Every analysis's figure (the lens, surgery, long inputs,
the timeline) is labkit.inspect's, the same function the notebooks call."""

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
