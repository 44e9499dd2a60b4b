"""Plotly figures of what happens inside a model: the logit lens, surgery (the per-token effect of
switching a part off, and the parts ranked by it), attention on long inputs, and the timeline of
a run's heads and probes ("watch it learn"). Plain data in (the results of labkit.inspect.lens,
surgery, attention.long_attention and timeline), a Figure in the house style out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.inspect import style
from labkit.inspect.plots import COLORS

AXIS_FONT = dict(size=style.TICK_SIZE, color=style.INK)


def lens_figure(lens: Any, *, max_label_tokens: int = 40) -> go.Figure:
    """Layers (rows, the top layer at the top) x positions: the colour is the probability the layer
    gives the actual next token, the text the layer's top guess; hover for its top candidates."""
    L, T = lens.target_logp.shape
    prob = np.exp(lens.target_logp)[::-1]  # (L, T), top layer first
    guesses = [[style.shorten(style.token_text(lens.top_tokens[i][t][0]), 8) for t in range(T)] for i in range(L)][::-1]
    hover = [[("<br>".join(f"{style.token_text(w)} {p:.2f}" for w, p in zip(lens.top_tokens[i][t], lens.top_probs[i][t]))
               + f"<br>next: {style.token_text(lens.target_tokens[t]) if lens.target_tokens else '?'} "
               f"(rank {int(lens.target_rank[i][t])})") for t in range(T)] for i in range(L)][::-1]
    rows = [name.rsplit(".", 1)[0].replace("blocks.", "block ").replace("layers.", "layer ") for name in lens.layer_names][::-1]
    fig = go.Figure(go.Heatmap(z=prob, x=style.tick_labels(lens.tokens), y=rows, text=guesses, texttemplate="%{text}",
                               textfont=dict(size=11), customdata=hover, **style.scale("probability"),
                               colorbar=style.colorbar("probability", title="P(next token)"), name="logit lens",
                               hovertemplate="%{y}, after %{x}<br>%{customdata}<extra></extra>"))
    fig.update_xaxes(title_text="position: the token just read", showticklabels=T <= max_label_tokens, tickangle=-45,
                     tickfont=AXIS_FONT)
    fig.update_yaxes(title_text="read out after", tickfont=AXIS_FONT)
    return style.apply(fig, height=170 + 48 * L)


def token_effect_figure(effect: Any, *, title: str = "") -> go.Figure:
    """Per predicted token, the change in its log-probability when the parts are switched off
    (`TokenEffect.delta`, nats): red bars where the parts helped predict it, blue where they hurt."""
    delta = np.asarray(effect.delta, dtype=float)
    colors = ["#b2182b" if d < 0 else "#2166ac" for d in delta]
    labels = style.tick_labels(effect.tokens)
    fig = go.Figure(go.Bar(x=labels, y=delta, marker_color=colors, name="change",
                           customdata=np.stack([effect.base_logp, effect.ablated_logp], -1),
                           hovertemplate="%{x}<br>log p %{customdata[0]:.2f} → %{customdata[1]:.2f} "
                                         "(%{y:+.2f} nats)<extra></extra>"))
    fig.add_hline(y=0, line=dict(color=style.INK, width=1))
    fig.update_xaxes(title_text="predicted token", tickangle=-45, tickfont=AXIS_FONT)
    fig.update_yaxes(title_text="change in log-probability (nats)")
    loss = -float(delta.mean()) if delta.size else 0.0
    fig.update_layout(title=title or f"switched off: the loss rises by {loss:+.3f} nats/token", bargap=0.2)
    return style.apply(fig, height=380)


def head_importance_figure(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """`surgery.head_importance` as a layer x head map: how much the mean loss rises (nats/token)
    when that head alone is switched off; on the signed scale (a head can also hurt)."""
    L = max((r["layer"] for r in rows), default=-1) + 1
    H = max((r["head"] for r in rows), default=-1) + 1
    z = np.zeros((L, H))
    for r in rows:
        z[r["layer"], r["head"]] = r["loss_increase"]
    top = float(np.abs(z).max()) if z.size else 0.0
    fig = go.Figure(go.Heatmap(z=z, x=[f"H{h}" for h in range(H)], y=[f"L{i}" for i in range(L)],
                               **style.scale("change", zmax=max(top, 1e-6)), texttemplate="%{z:+.3f}",
                               textfont=dict(size=style.TICK_SIZE), name="loss increase",
                               colorbar=style.colorbar("change", title="Δ loss (nats/token)"),
                               hovertemplate="%{y} %{x}: loss %{z:+.4f} nats/token without it<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="layer")
    fig.update_xaxes(title_text="head", side="bottom")
    fig.update_layout(title="what each head is worth: the loss rise when it alone is switched off")
    return style.apply(fig, height=200 + 50 * L)


def unit_importance_figure(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """`surgery.unit_importance`: the units whose removal raises the loss most, largest first."""
    fig = go.Figure(go.Bar(x=[f"unit {r['unit']}" for r in rows], y=[r["loss_increase"] for r in rows],
                           marker_color="#2166ac", name="loss increase",
                           hovertemplate="%{x}: loss %{y:+.4f} nats/token without it<extra></extra>"))
    layer = rows[0]["layer"] if rows else 0
    fig.update_xaxes(title_text=f"unit of layer {layer}", tickangle=-45)
    fig.update_yaxes(title_text="Δ loss (nats/token)")
    return style.apply(fig, height=360)


def long_attention_figure(long: Any) -> go.Figure:
    """`attention.long_attention`: query blocks (rows) x key blocks (columns) on token positions,
    so zooming in reads the positions; each cell the share of its queries' attention."""
    edges = list(long.edges)
    head = "mean of heads" if long.head == "mean" else f"head {long.head}"
    fig = go.Figure(go.Heatmap(z=long.matrix, x=edges, y=edges, **style.scale("attention"),
                               colorbar=style.colorbar("attention", title="share"), name="attention",
                               hovertemplate="queries near token %{y}<br>keys near token %{x}<br>"
                                             "share %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="query position (token)")
    fig.update_xaxes(title_text="key position (token)")
    fig.update_layout(title=f"layer {long.layer}, {head}: {len(long.tokens):,} tokens in {len(edges) - 1} blocks")
    return style.apply(fig, height=640)


TIMELINE_PANELS = (("induction", "induction score"), ("previous_token", "previous-token share"),
                   ("entropy", "attention entropy (nats)"))


def timeline_figure(snapshots: Sequence[Any], *, step: int | None = None) -> go.Figure:
    """Over a run's evaluations: each head's induction score, previous-token share and attention
    entropy on the fixed sentence (one line per head), and the probe scores, with a dashed line at
    `step` (the snapshot shown beside)."""
    with_stats = [s for s in snapshots if s.head_stats]
    with_probes = [s for s in snapshots if s.probes]
    panels = [(k, t) for k, t in TIMELINE_PANELS if with_stats and k in with_stats[0].head_stats]
    panels += [("probes", "probe accuracy")] if with_probes else []
    if not panels:
        return style.apply(go.Figure())
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.07, subplot_titles=[t for _, t in panels])
    for col, (key, _) in enumerate(panels, start=1):
        if key == "probes":
            for i, name in enumerate(sorted({n for s in with_probes for n in s.probes})):
                pts = [(s.step, s.probes[name]) for s in with_probes if name in s.probes]
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=name, mode="lines+markers",
                                         line=dict(color=COLORS[i % len(COLORS)], width=2.5)), row=1, col=col)
            fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=col)
            continue
        L, H = with_stats[0].head_stats[key].shape
        for layer in range(L):
            for head in range(H):
                pts = [(s.step, float(s.head_stats[key][layer, head])) for s in with_stats if key in s.head_stats]
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=f"L{layer} H{head}",
                                         mode="lines+markers", legendgroup=f"L{layer} H{head}", showlegend=col == 1,
                                         line=dict(color=COLORS[(layer * H + head) % len(COLORS)],
                                                   dash="solid" if layer % 2 == 0 else "dot")),
                              row=1, col=col)
        if key != "entropy":
            fig.update_yaxes(range=[0, 1.02], row=1, col=col)
    if step is not None:
        for col in range(1, len(panels) + 1):
            fig.add_vline(x=step, line=dict(dash="dash", color=style.CHANCE), row=1, col=col)
    fig.update_xaxes(title_text="step")
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    return style.apply(fig, height=400)
