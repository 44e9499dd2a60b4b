"""Plotly figures for the app and the notebooks: loss curves, attention heatmaps, per-token
probabilities and the next-token candidates of generation, and fine-tuning results. Each function
takes plain data and returns a Figure in the house style (labkit.inspect.style)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.inspect import style
from labkit.inspect.curves import RunCurves, ema

COLORS = style.LINE_COLORS
LN2 = math.log(2)


def _faint(color: str, alpha: float = 0.25) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def loss_figure(curves: dict[str, RunCurves], *, x_title: str = "step", y_title: str | None = None,
                smoothing: float = 0.6, log_y: bool = False, show_val: bool = True, unit: str = "nats") -> go.Figure:
    """Per run: the raw training curve (faint), its smoothed curve, and validation points.
    Losses are in nats per token, or with `unit="bits"` converted to bits; `y_title` None or
    "loss" says so on the axis (another title, such as "perplexity", is kept as it is).

    Trace names: "<run>" (smoothed), "<run> (raw)", "<run> val"."""
    is_loss = y_title in (None, "loss")
    factor = 1 / LN2 if unit == "bits" and is_loss else 1.0
    fig, shown = go.Figure(), []
    for i, (name, c) in enumerate(curves.items()):
        color = COLORS[i % len(COLORS)]
        train_y = [v * factor if v is not None else v for v in c.train.y]
        val_y = [v * factor for v in c.val.y]
        shown += [*train_y, *val_y]
        if c.train.x:
            if smoothing > 0:
                fig.add_trace(go.Scatter(x=c.train.x, y=train_y, name=f"{name} (raw)", mode="lines",
                                         line=dict(color=_faint(color), width=1), legendgroup=name,
                                         showlegend=False, hoverinfo="skip"))
            fig.add_trace(go.Scatter(x=c.train.x, y=ema(train_y, smoothing), name=name, mode="lines",
                                     line=dict(color=color, width=2.5), legendgroup=name))
        if show_val and c.val.x:
            fig.add_trace(go.Scatter(x=c.val.x, y=val_y, name=f"{name} val", mode="markers+lines",
                                     marker=dict(color=color, size=12, symbol="diamond",
                                                 line=dict(color="white", width=1.5)),
                                     line=dict(color=color, width=1.5, dash="dot"), legendgroup=name))
    fig.update_layout(xaxis_title=x_title, yaxis_title=style.loss_title(unit) if is_loss else y_title,
                      hovermode="x unified", legend=dict(orientation="h", y=-0.18))
    if log_y:
        style.log_axis(fig, [v for v in shown if v is not None])
    return style.apply(fig, height=460)


def attention_grid_figure(attention: np.ndarray, tokens: Sequence[str], *, max_label_tokens: int = 24,
                          layers: Sequence[int] | None = None, heads: Sequence[int] | None = None) -> go.Figure:
    """A layer x head grid of attention heatmaps (query rows, key columns); the positions the
    causal mask hides (key after query) are drawn in grey. `layers`/`heads`: the model's indices of
    the rows and columns given (a slice of the model's heads keeps its real names)."""
    L, H, T, _ = attention.shape
    layers, heads = list(layers if layers is not None else range(L)), list(heads if heads is not None else range(H))
    labelled = T <= max_label_tokens
    spacing = 0.02 if L == 1 else min(0.12, 0.3 / L) if labelled else 0.05
    fig = make_subplots(rows=L, cols=H, horizontal_spacing=0.03 if H > 1 else 0.0, vertical_spacing=spacing,
                        subplot_titles=[f"layer {a}, head {b}" for a in layers for b in heads])
    for i in range(L):
        for j in range(H):
            add_position_heatmap(fig, attention[i, j], tokens, i + 1, j + 1, name=f"L{layers[i]} H{heads[j]}",
                                 showscale=i == 0 and j == 0)
    position_axes(fig, T, max_label_tokens, rows=L, cols=H)
    per_row = 320 if L * H == 1 else 240
    return style.apply(fig, height=max(320, per_row * L + (90 if labelled else 40)))


def head_attention_figure(z: np.ndarray, tokens: Sequence[str], *, layer: int, head: int,
                          max_label_tokens: int = 40, title: str | None = None) -> go.Figure:
    """One head's (T, T) attention, titled with its real layer and head."""
    fig = attention_grid_figure(z[None, None], tokens, max_label_tokens=max_label_tokens, layers=[layer], heads=[head])
    fig.layout.annotations = ()
    fig.update_layout(title=title or f"layer {layer}, head {head}")
    return style.apply(fig, height=max(420, min(720, 220 + 16 * len(tokens))))


QUANTITY = {"weight": "attention", "share": "share", "change": "change"}


def add_position_heatmap(fig: go.Figure, z: np.ndarray, tokens: Sequence[str], row: int, col: int, *,
                         name: str, showscale: bool = False, signed: bool = False, value: str = "weight",
                         axes: tuple[str, str] = ("query", "key"), zmax: float | None = None,
                         colorbar_x: float | None = None) -> None:
    """One (T, T) map of query/prediction rows over key/input columns into subplot (row, col), the
    positions a causal model cannot read (column after row) in grey. Attention weights and shares
    on their 0..1 scale, or with `signed` a change on the signed scale (`zmax`: its half range)."""
    T = z.shape[0]
    masked = np.triu(np.ones((T, T), dtype=bool), k=1)
    labels = style.tick_labels(tokens)
    quantity = "change" if signed else QUANTITY.get(value, "attention")
    colorbar = style.colorbar(quantity, title=value, len=0.6, **({"x": colorbar_x} if colorbar_x is not None else {}))
    fig.add_trace(go.Heatmap(z=np.where(masked, np.nan, z), x=labels, y=labels, showscale=showscale, name=name,
                             **style.scale(quantity, zmax=zmax), colorbar=colorbar,
                             hovertemplate=f"{axes[0]} %{{y}}<br>{axes[1]} %{{x}}<br>{value} %{{z:.3f}}<extra></extra>"),
                  row=row, col=col)
    fig.add_trace(go.Heatmap(z=np.where(masked, 1.0, np.nan), x=labels, y=labels, showscale=False, name="causal mask",
                             colorscale=[[0, "#e5e7eb"], [1, "#e5e7eb"]], hoverinfo="skip"),
                  row=row, col=col)


def position_axes(fig: go.Figure, n_tokens: int, max_label_tokens: int, *, rows: int = 1, cols: int = 1,
                  axes: tuple[str, str] = ("query", "key")) -> None:
    """Token labels (when few enough to read) on the bottom row's x axes and the first column's y
    axes, with the axis titles; rows top down."""
    show = n_tokens <= max_label_tokens
    font = dict(size=style.TICK_SIZE, color=style.INK)
    fig.update_xaxes(showticklabels=False, tickangle=-50, tickfont=font)
    fig.update_yaxes(autorange="reversed", showticklabels=False, tickfont=font)
    for c in range(1, cols + 1):
        fig.update_xaxes(showticklabels=show, title_text=axes[1], row=rows, col=c)
    for r in range(1, rows + 1):
        fig.update_yaxes(showticklabels=show, title_text=axes[0], row=r, col=1)


STAT_PANELS = (("entropy / uniform", "entropy_ratio", "score", "share of the maximum"),
               ("mean attention distance", "mean_distance", "distance", "tokens"),
               ("first-token share", "first_token_share", "score", "weight"),
               ("previous-token share", "previous_token_share", "score", "weight"),
               ("induction score", "induction_score", "score", "score"))


def head_stats_figure(stats: list[dict[str, float]]) -> go.Figure:
    """Layer x head heatmaps of the head statistics that the rows have: entropy relative to
    uniform, first-token and previous-token shares and the induction score on one 0..1 scale,
    mean attention distance in tokens; each panel with its colourbar and unit."""
    if not stats:
        return style.apply(go.Figure())
    L = max(r["layer"] for r in stats) + 1
    H = max(r["head"] for r in stats) + 1
    panels = [p for p in STAT_PANELS if all(p[1] in r for r in stats)]
    top_distance = max(1.0, max(r.get("mean_distance", 0.0) for r in stats))
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.1, subplot_titles=[p[0] for p in panels])
    for col, (_, key, quantity, unit) in enumerate(panels, start=1):
        z = np.zeros((L, H))
        for r in stats:
            z[r["layer"], r["head"]] = r[key]
        domain = fig.layout[f"xaxis{col if col > 1 else ''}"].domain
        fig.add_trace(go.Heatmap(z=z, x=[f"H{h}" for h in range(H)], y=[f"L{layer}" for layer in range(L)],
                                 **style.scale(quantity, zmax=top_distance), name=key, texttemplate="%{z:.2f}",
                                 textfont=dict(size=style.TICK_SIZE),
                                 colorbar=style.colorbar(quantity, title=unit, x=domain[1] + 0.005, len=0.9),
                                 hovertemplate=f"%{{y}} %{{x}}<br>{key} %{{z:.3f}}<extra></extra>"),
                      row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="head")
    fig.update_yaxes(title_text="layer", col=1)
    return style.apply(fig, height=170 + 45 * L)


def token_probability_figure(tokens: Sequence[Any], title: str = "") -> go.Figure:
    """Each generated token's probability (bars: under the model; markers: under the sampling
    distribution) and the entropy of the model's next-token distribution (line, right axis), the
    tokens written on the x axis. `tokens`: GeneratedToken-likes."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x = list(range(len(tokens)))
    text = [style.token_text(t.text) for t in tokens]
    fig.add_trace(go.Bar(x=x, y=[t.model_prob for t in tokens], name="p (model)", text=text, textposition="none",
                         marker_color="#4C78A8", hovertemplate="%{text}<br>p(model) %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=[t.prob for t in tokens], name="p (sampling)", mode="markers",
                             marker=dict(color="#F58518", size=9, line=dict(color="white", width=1)), customdata=text,
                             hovertemplate="%{customdata}<br>p(sampling) %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=[t.entropy for t in tokens], name="entropy (nats)", mode="lines+markers",
                             line=dict(color="#54A24B"), customdata=text,
                             hovertemplate="%{customdata}<br>entropy %{y:.2f} nats<extra></extra>"),
                  secondary_y=True)
    every = max(1, math.ceil(len(tokens) / 20))  # at most 20 labels: they stay apart in a half-width column
    fig.update_yaxes(title_text="probability", range=[0, 1.05], secondary_y=False)
    fig.update_yaxes(title_text="entropy (nats)", secondary_y=True, rangemode="tozero", showgrid=False)
    fig.update_xaxes(title_text="generated token", range=[-0.5, max(len(tokens), 10) - 0.5], tickangle=-45,
                     tickvals=x[::every], ticktext=[f"{i} {style.shorten(text[i], 10)}" for i in x[::every]])
    fig.update_layout(title=title or None, bargap=0.15, legend=dict(orientation="h", y=1.12, x=0))
    return style.apply(fig, height=400)


def next_token_figure(candidates: Sequence[Any], *, chosen: int | None = None, title: str = "",
                      drawn: Any = None) -> go.Figure:
    """One generation step's distribution: the top candidates (Candidate-likes: id, text,
    model_prob, sampling_prob), best first, under the model (temperature 1) and as sampled from
    (after temperature, top-k and top-p: 0 where they cut a token). `chosen`: the id picked;
    `drawn`: that token as a Candidate-like, drawn as a last bar when it is not among the
    candidates. The axis ends just past the longest bar, so that a flat distribution (ten
    tokens of 0.1% each) still draws bars that can be read."""
    rows = list(candidates)
    outside = drawn is not None and all(c.id != drawn.id for c in rows)
    if outside:
        rows.append(drawn)
    labels = [f"{style.token_text(c.text)}" + (" ◀" if c.id == chosen else "")
              + (f" (drawn; not in the top {len(rows) - 1})" if outside and c is drawn else "") for c in rows]
    fig = go.Figure([
        go.Bar(y=labels, x=[c.model_prob for c in rows], name="model (temperature 1)", orientation="h",
               marker_color="#9ca3af", hovertemplate="%{y}: %{x:.4f} under the model<extra></extra>"),
        go.Bar(y=labels, x=[c.sampling_prob for c in rows], name="sampled from", orientation="h",
               marker_color="#7c3aed", hovertemplate="%{y}: %{x:.4f} as sampled<extra></extra>")])
    top = max([c.model_prob for c in rows] + [c.sampling_prob for c in rows] + [1e-6])
    fig.update_yaxes(autorange="reversed", title_text="next token")
    fig.update_xaxes(title_text="probability", range=[0, min(1.0, top * 1.12)],
                     tickformat=".0%" if top >= 0.05 else ".2%")
    fig.update_layout(barmode="group", title=title or None, legend=dict(orientation="h", y=-0.2))
    return style.apply(fig, height=max(260, 90 + 34 * len(rows)))


def confusion_matrix_figure(matrix: Sequence[Sequence[float]], labels: Sequence[str] | None = None) -> go.Figure:
    """Rows: true class; columns: predicted class; counts written in the cells."""
    z = np.asarray(matrix, dtype=float)
    labels = list(labels) if labels else [str(i) for i in range(z.shape[0])]
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, **style.scale("count"), texttemplate="%{z:.0f}",
                               textfont=dict(size=14), colorbar=style.colorbar("count", title="sentences"),
                               name="confusion matrix",
                               hovertemplate="true %{y}, predicted %{x}: %{z:.0f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="true label")
    fig.update_xaxes(title_text="predicted label", side="bottom")
    return style.apply(fig, height=340)


def _condition(point: dict[str, Any]) -> str:
    return str(point.get("condition") or point.get("model") or "runs")


def learning_curve_figure(points: Sequence[dict[str, Any]], x: str = "train_size", y: str = "accuracy",
                          by: str | None = None, chance: float | None = 0.5) -> go.Figure:
    """Fine-tuning runs as points (one per run) of `y` against `x`, one line per condition
    ("pretrained, full", "scratch", ...: the `condition` of `classifier.summary`, else `model`;
    when the points come from several base models, per model and condition). Accuracy is drawn on
    0..1 with a dashed chance line, so one or two points still read on a sensible axis."""
    usable = [p for p in points if isinstance(p.get(x), (int, float)) and isinstance(p.get(y), (int, float))
              and math.isfinite(p[y])]
    several_models = len({p.get("model") for p in usable if p.get("condition")}) > 1
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in usable:
        key = str(p.get(by)) if by else _condition(p)
        if several_models and not by and p.get("condition"):
            key = f"{p.get('model')} · {key}"
        groups.setdefault(key, []).append(p)
    fig = go.Figure()
    for i, (name, pts) in enumerate(sorted(groups.items())):
        pts = sorted(pts, key=lambda p: p[x])
        fig.add_trace(go.Scatter(x=[p[x] for p in pts], y=[p[y] for p in pts], name=name, mode="lines+markers",
                                 text=[p.get("run", "") for p in pts], line=dict(color=COLORS[i % len(COLORS)], width=2),
                                 marker=dict(size=11, color=COLORS[i % len(COLORS)], line=dict(color="white", width=1)),
                                 hovertemplate="%{text}<br>%{x:,}: %{y:.3f}<extra>" + name + "</extra>"))
    xs = [p[x] for p in usable]
    fig.update_layout(xaxis_title=x.replace("_", " "), yaxis_title=y.replace("_", " "),
                      legend=dict(orientation="h", y=-0.25))
    if "accuracy" in y:
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
        if chance is not None:
            style.chance_line(fig, chance, f"chance ({chance:.0%})")
    if xs and min(xs) > 0:
        lo, hi = min(xs), max(xs)
        style.log_axis(fig, xs, axis="x")
        fig.update_xaxes(range=[math.log10(lo / 2), math.log10(hi * 2)])
    return style.apply(fig, height=380)


def metric_curve_figure(x: Sequence[float], y: Sequence[float], *, name: str, x_title: str = "step",
                        chance: float | None = None) -> go.Figure:
    """One metric of one run against steps (e.g. a fine-tuning run's validation accuracy). An
    accuracy is drawn on 0..1 with its chance line (`chance`, default 50%)."""
    fig = go.Figure(go.Scatter(x=list(x), y=list(y), name=name, mode="lines+markers", marker=dict(size=10)))
    fig.update_layout(xaxis_title=x_title, yaxis_title=name)
    if "accuracy" in name:
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
        level = 0.5 if chance is None else chance
        style.chance_line(fig, level, f"chance ({level:.0%})")
    elif chance is not None:
        style.chance_line(fig, chance)
    if len(x) <= 2:  # a point or two: keep them off the edges
        lo, hi = (min(x), max(x)) if len(x) else (0, 1)
        pad = max(1.0, (hi - lo) * 0.5)
        fig.update_xaxes(range=[lo - pad, hi + pad])
    return style.apply(fig, height=320)
