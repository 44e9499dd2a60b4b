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
from labkit.inspect.lens import layer_label
from labkit.inspect.plots import COLORS

AXIS_FONT = dict(size=style.TICK_SIZE, color=style.INK)


def lens_figure(lens: Any, *, max_label_tokens: int = 40) -> go.Figure:
    """The logit lens (`labkit.inspect.lens.Lens`) as a grid of what each layer would predict: rows
    are the points read (the embeddings at the bottom, the top layer on top), columns the positions.
    A cell names the layer's likeliest next token (✓ when it is the actual next token) and is
    coloured by the probability the layer gives the actual next token; hover for its top guesses
    and the actual token's rank."""
    L, T = lens.target_logp.shape
    order = list(range(L))[::-1]  # the top layer first
    prob = np.exp(lens.target_logp)[order]  # (L, T)
    targets = lens.target_tokens or ["?"] * T
    text = [[style.shorten(style.token_text(lens.top_tokens[i][t][0]), 8)
             + (" ✓" if lens.top_tokens[i][t][0] == targets[t] else "") for t in range(T)] for i in order]
    hover = [[f"reads {style.token_text(lens.tokens[t])}, next is {style.token_text(targets[t])} "
              f"(rank {int(lens.target_rank[i][t]):,} here)<br>"
              + "<br>".join(f"{style.token_text(w)} {style.number(p)}"
                            for w, p in zip(lens.top_tokens[i][t], lens.top_probs[i][t]))
              for t in range(T)] for i in order]
    rows = [layer_label(lens.layer_names[i]) for i in order]
    fig = go.Figure(go.Heatmap(z=prob, x=style.tick_labels(lens.tokens), y=rows, text=text,
                               texttemplate="%{text}" if T <= max_label_tokens else None, textfont=dict(size=11),
                               customdata=hover, **style.scale("probability"),
                               colorbar=style.colorbar("probability", title="p(actual next token)"), name="logit lens",
                               hovertemplate="%{y}<br>%{customdata}<extra></extra>"))
    fig.update_xaxes(title_text="input token (the prediction is of the token after it)", tickangle=-45,
                     showticklabels=T <= max_label_tokens, tickfont=AXIS_FONT)
    fig.update_yaxes(title_text="read out after", tickfont=AXIS_FONT, type="category")
    return style.apply(fig, height=max(300, 170 + 60 * L))


def _loss_marker(values: np.ndarray, top: float) -> dict[str, Any]:
    """Bars coloured on the "loss change" scale (a heatmap's zmin/zmax/zmid as cmin/cmax/cmid)."""
    scale = style.scale("loss change", zmax=top)
    return dict(color=values, colorscale=scale["colorscale"], cmin=scale["zmin"], cmax=scale["zmax"],
                cmid=scale.get("zmid"), colorbar=style.colorbar("loss change"))


def token_effect_figure(effect: Any, *, title: str = "") -> go.Figure:
    """Per predicted token, how much its loss (-log p, nats) changes when the parts are switched
    off (`TokenEffect`): red where it rose (the parts helped predict that token), blue where it fell
    (they hurt), on the same scale as `head_importance_figure`."""
    change = -np.asarray(effect.delta, dtype=float)  # loss switched off - loss intact
    top = max(float(np.abs(change).max()) if change.size else 0.0, 1e-6)
    base, ablated = np.exp(np.asarray(effect.base_logp, float)), np.exp(np.asarray(effect.ablated_logp, float))
    hover = [f"p {style.number(b)} → {style.number(a)}<br>Δ loss {style.number(c, signed=True)} nats"
             for b, a, c in zip(base, ablated, change)]
    fig = go.Figure(go.Bar(x=style.tick_labels(effect.tokens), y=change, marker=_loss_marker(change, top),
                           name="loss change", customdata=hover, hovertemplate="%{x}<br>%{customdata}<extra></extra>"))
    fig.add_hline(y=0, line=dict(color=style.INK, width=1))
    fig.update_xaxes(title_text="predicted token", tickangle=-45, tickfont=AXIS_FONT)
    fig.update_yaxes(title_text="Δ loss (nats): switched off − intact")
    loss = float(change.mean()) if change.size else 0.0
    fig.update_layout(title=title or f"switched off: the loss changes by {style.number(loss, signed=True)} nats/token",
                      bargap=0.2)
    return style.apply(fig, height=400)


def head_importance_figure(rows: Sequence[dict[str, Any]], *, title: str = "") -> go.Figure:
    """`surgery.head_importance` as a layer x head map: how much the mean loss rises (nats/token)
    when that head alone is switched off; red a head that helped, blue one that hurt (a head can)."""
    L = max((r["layer"] for r in rows), default=-1) + 1
    H = max((r["head"] for r in rows), default=-1) + 1
    z = np.zeros((L, H))
    for r in rows:
        z[r["layer"], r["head"]] = r["loss_increase"]
    top = float(np.abs(z).max()) if z.size else 0.0
    text = [[style.number(float(v), signed=True, digits=2) for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=[f"H{h}" for h in range(H)], y=[f"L{i}" for i in range(L)], text=text,
                               **style.scale("loss change", zmax=max(top, 1e-6)), texttemplate="%{text}",
                               textfont=dict(size=style.TICK_SIZE), name="loss increase",
                               colorbar=style.colorbar("loss change"),
                               hovertemplate="%{y} %{x}: loss %{text} nats/token without it<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="layer")
    fig.update_xaxes(title_text="head", side="bottom")
    fig.update_layout(title=title or "the loss rise when each head alone is switched off")
    return style.apply(fig, height=max(260, 200 + 50 * L))


def unit_importance_figure(rows: Sequence[dict[str, Any]], *, title: str = "") -> go.Figure:
    """`surgery.unit_importance`: the units whose removal raises the loss most, largest first, on
    the same red (helped) / blue (hurt) scale as the heads."""
    values = np.array([r["loss_increase"] for r in rows], dtype=float)
    top = max(float(np.abs(values).max()) if values.size else 0.0, 1e-6)
    fig = go.Figure(go.Bar(x=[f"u{r['unit']}" for r in rows], y=values, marker=_loss_marker(values, top),
                           name="loss increase", customdata=[style.number(v, signed=True) for v in values],
                           hovertemplate="%{x}: loss %{customdata} nats/token without it<extra></extra>"))
    layer = rows[0]["layer"] if rows else 0
    fig.update_xaxes(title_text=f"unit of layer {layer}", tickangle=-45, type="category")
    fig.update_yaxes(title_text="Δ loss (nats/token)")
    fig.update_layout(title=title or None)
    return style.apply(fig, height=360)


def long_attention_figure(long: Any) -> go.Figure:
    """`attention.long_attention`, pooled into blocks of tokens: cell (i, j) is the share of attention
    the queries of block i put on the keys of block j (hover names the token ranges; zoom with the
    mouse). The future is blank where the model never looks there (a causal mask); the colour scale
    ends at the 99th percentile, so that a sink column does not wash out the rest."""
    edges = list(long.edges)
    spans = [f"{a}–{b - 1}" for a, b in zip(edges[:-1], edges[1:])]
    matrix = np.asarray(long.matrix, dtype=float)
    future = np.triu(np.ones(matrix.shape, dtype=bool), k=1)
    if not matrix[future].any():  # causal: nothing above the diagonal to show
        matrix = np.where(future, np.nan, matrix)
    positive = matrix[np.isfinite(matrix) & (matrix > 0)]
    top = float(np.quantile(positive, 0.99)) if positive.size else 1.0
    head = "mean of the heads" if long.head == "mean" else f"head {long.head}"
    fig = go.Figure(go.Heatmap(z=matrix, x=spans, y=spans, colorscale=style.COLORSCALES["attention"].colorscale,
                               zmin=0, zmax=max(top, 1e-6), colorbar=style.colorbar("attention", title="share"),
                               name="attention", hovertemplate="queries %{y}<br>keys %{x}<br>share %{z:.4f}"
                                                               "<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="query tokens")
    fig.update_xaxes(title_text="key tokens")
    fig.update_layout(title=f"layer {long.layer}, {head}: {len(long.tokens):,} tokens in {len(spans)} blocks")
    return style.apply(fig, height=720)


TIMELINE_PANELS = (("induction", "induction score"), ("previous_token", "previous-token share"),
                   ("entropy", "attention entropy (nats)"))


def timeline_figure(snapshots: Sequence[Any], *, step: int | None = None, stats: Sequence[str] | None = None,
                    probes: bool = True, chance: float | None = None) -> go.Figure:
    """Over a run's evaluations: each head's induction score, previous-token share and attention
    entropy on the fixed sentence (one line per head, a panel per statistic), and the probe scores,
    with a dashed line at `step` (the snapshot shown beside). `stats`: which statistics (keys of
    TIMELINE_PANELS; None: every one recorded); `probes`: the probes' panel too, with a `chance`
    level when given. The app's Watch it learn draws one panel at a time with it, the notebooks all."""
    with_stats = [s for s in snapshots if s.head_stats]
    with_probes = [s for s in snapshots if s.probes] if probes else []
    wanted = [k for k, _ in TIMELINE_PANELS] if stats is None else list(stats)
    panels = [(k, t) for k, t in TIMELINE_PANELS if k in wanted and with_stats and k in with_stats[0].head_stats]
    panels += [("probes", "probe accuracy")] if with_probes else []
    if not panels:
        return style.apply(go.Figure())
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.07,
                        subplot_titles=[t for _, t in panels] if len(panels) > 1 else None)
    for col, (key, title) in enumerate(panels, start=1):
        if key == "probes":
            for i, name in enumerate(sorted({n for s in with_probes for n in s.probes})):
                pts = [(s.step, s.probes[name]) for s in with_probes if name in s.probes]
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=name, mode="lines+markers",
                                         line=dict(color=COLORS[i % len(COLORS)], width=2.5)), row=1, col=col)
            fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=col)
        else:
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
        if len(panels) == 1:
            fig.update_yaxes(title_text=title, row=1, col=col)
    if step is not None:
        for col in range(1, len(panels) + 1):
            fig.add_vline(x=step, line=dict(dash="dash", color=style.CHANCE), row=1, col=col)
    if chance is not None and with_probes:
        style.chance_line(fig, chance, f"chance ({chance:.0%})", row=1, col=len(panels))
    fig.update_xaxes(title_text="step")
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    return style.apply(fig, height=400 if len(panels) > 1 else 360)
