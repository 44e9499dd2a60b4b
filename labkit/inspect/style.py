"""The house style of every chart, in the app and the notebooks alike: readable fonts, one colour
scale per quantity (always with its colourbar and unit), axis titles, chance lines, token labels
that can be read, and export buttons that work offline.

    fig = style.apply(go.Figure(go.Heatmap(z=z, **style.scale("attention"),
                                           colorbar=style.colorbar("attention"))))
    st.plotly_chart(fig, config=style.EXPORT_CONFIG)    # or fig.show(config=style.EXPORT_CONFIG)

A quantity keeps its scale wherever it is drawn, so the same colour means the same value on every
page: attention weights 0..1 in blues, surprisal in bits in reds, a signed change from red through
white to blue, and so on (`COLORSCALES`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

FONT = dict(family="Inter, 'Segoe UI', Helvetica, Arial, sans-serif", size=13, color="#1f2328")
TICK_SIZE = 12  # token labels on heatmap axes: never below 11 px, and dark
TITLE_SIZE = 15
INK = "#1f2328"
GRID = "#e5e7eb"
CHANCE = "#6b7280"
LINE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
BASE_TEMPLATE = "plotly_white"


@dataclass(frozen=True)
class Scale:
    """How one quantity is coloured: the plotly colour scale, its range (None: from the data) and unit."""

    colorscale: str
    zmin: float | None
    zmax: float | None
    unit: str
    zmid: float | None = None


COLORSCALES: dict[str, Scale] = {
    "attention": Scale("Blues", 0.0, 1.0, "weight"),
    "share": Scale("Blues", 0.0, 1.0, "share"),  # a saliency row's share of |score|
    "surprisal": Scale("Reds", 0.0, None, "bits"),
    "change": Scale("RdBu", -1.0, 1.0, "change", zmid=0.0),  # signed: red less, blue more
    # surgery's one meaning: the loss with a part switched off minus with it in place; red where the
    # loss rose (the part helped), blue where it fell (the part hurt), on the heatmaps and bars alike
    "loss change": Scale("RdBu_r", -1.0, 1.0, "Δ loss (nats)", zmid=0.0),
    "divergence": Scale("Oranges", 0.0, 1.0, "total variation"),  # how far two distributions are apart
    "probability": Scale("Purples", 0.0, 1.0, "probability"),
    "entropy": Scale("Viridis", 0.0, None, "nats"),
    "loss": Scale("Oranges", 0.0, None, "nats"),
    "distance": Scale("Cividis", 0.0, None, "tokens"),
    "score": Scale("Greens", 0.0, 1.0, "score"),  # 0..1 head scores: induction, previous token, sink
    "count": Scale("Blues", 0.0, None, "count"),
}


def _scale(quantity: str) -> Scale:
    if quantity not in COLORSCALES:
        raise KeyError(f"no colour scale for {quantity!r}; known: {', '.join(COLORSCALES)}")
    return COLORSCALES[quantity]


def scale(quantity: str, *, zmin: float | None = None, zmax: float | None = None) -> dict[str, Any]:
    """Keyword arguments for a go.Heatmap of `quantity`: colorscale, zmin, zmax (and zmid for a
    signed one). `zmin`/`zmax` fill a range the quantity leaves open (surprisal has no top);
    a signed scale stays symmetric around its middle."""
    s = _scale(quantity)
    low, high = s.zmin if s.zmin is not None else zmin, s.zmax if s.zmax is not None else zmax
    if s.zmid is not None and zmax is not None:  # a signed map of small changes: zoom, symmetric
        low, high = -abs(zmax), abs(zmax)
    out: dict[str, Any] = {"colorscale": s.colorscale, "zmin": low, "zmax": high}
    if s.zmid is not None:
        out["zmid"] = s.zmid
    return {k: v for k, v in out.items() if v is not None}


def unit(quantity: str) -> str:
    return _scale(quantity).unit


def colorbar(quantity: str, *, title: str | None = None, **kw: Any) -> dict[str, Any]:
    """A colourbar that names the quantity's unit (`title` replaces it), readable and slim."""
    return dict(title=dict(text=title or _scale(quantity).unit, side="right", font=dict(size=TICK_SIZE)),
                tickfont=dict(size=TICK_SIZE), thickness=14, outlinewidth=0, **kw)


def loss_title(unit_name: str = "nats", what: str = "loss") -> str:
    """'loss (nats/token)', or bits: the unit every loss axis carries."""
    return f"{what} ({unit_name}/token)"


def apply(fig: go.Figure, *, height: int | None = None) -> go.Figure:
    """The house style on `fig` (in place; returned for chaining): a white template, fonts of 12 px
    and more, dark ticks, hover labels, subplot titles a little larger, room for axis titles. Axis
    titles and colour scales the figure sets are kept."""
    fig.update_layout(template=BASE_TEMPLATE, font=FONT, title_font=dict(size=TITLE_SIZE),
                      hoverlabel=dict(font=dict(size=TICK_SIZE, family=FONT["family"]), bgcolor="white"),
                      legend=dict(font=dict(size=TICK_SIZE)), colorway=list(LINE_COLORS))
    if height is not None:
        fig.update_layout(height=height)
    fig.update_xaxes(tickfont=dict(size=TICK_SIZE, color=INK), title_font=dict(size=FONT["size"]),
                     automargin=True, gridcolor=GRID, zerolinecolor=GRID)
    fig.update_yaxes(tickfont=dict(size=TICK_SIZE, color=INK), title_font=dict(size=FONT["size"]),
                     automargin=True, gridcolor=GRID, zerolinecolor=GRID)
    titles = [note for note in fig.layout.annotations if note.yref == "paper" and note.yanchor == "bottom"
              and note.showarrow is False]  # make_subplots' panel titles
    for note in fig.layout.annotations:  # subplot titles; a chance line's label keeps its colour
        if note.yref == "paper":
            note.font = dict(size=FONT["size"], color=INK)
    per_row: dict[float, int] = {}
    for note in titles:
        per_row[round(note.y, 3)] = per_row.get(round(note.y, 3), 0) + 1
    for note in titles:  # panels side by side share the width: long titles wrap instead of running into each other
        note.text = wrap(note.text, max(14, PANEL_TITLE_CHARS // per_row[round(note.y, 3)]))
    if fig.layout.title.text:
        # the title on its own line under plotly's toolbar (top right), which it would otherwise run under;
        # a long one in lines that a chart in a column still shows whole
        fig.update_layout(title=dict(text=wrap(fig.layout.title.text, TITLE_CHARS), x=0, xanchor="left", xref="paper",
                                     yref="container", y=1, yanchor="top", pad=dict(t=TITLE_PAD)))
    if fig.layout.legend.y is not None or fig.layout.showlegend or len(fig.data) > 1:
        # the legend in a row of its own at the bottom, below the axis titles: never over the data
        fig.update_layout(legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"))
    if fig.layout.margin.t is None:  # room for the toolbar, then the title, then the top row's panel titles
        lines = max((note.text.count("<br>") + 1 for note in titles if note.y >= max(n.y for n in titles) - 1e-3),
                    default=0)
        title_lines = fig.layout.title.text.count("<br>") + 1 if fig.layout.title.text else 0
        top = (TITLE_PAD + 6 + 20 * title_lines if title_lines else TOOLBAR_PX + 4) + 18 * lines
        fig.update_layout(margin=dict(l=10, r=10, t=top, b=10))
    return fig


TOOLBAR_PX = 34  # the height plotly's toolbar takes at the top right of a chart
TITLE_PAD = TOOLBAR_PX + 14  # from the top to a title's baseline: its first line starts under the toolbar
TITLE_CHARS = 48  # a chart title's line: longer ones wrap
PANEL_TITLE_CHARS = 60  # characters of panel title a full-width row holds, shared by the panels side by side


def wrap(text: str | None, width: int) -> str | None:
    """`text` in lines of at most `width` characters (broken at spaces, joined with <br>)."""
    if not text or len(text) <= width or "<br>" in text:
        return text
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "<br>".join([*lines, line])


def chance_line(fig: go.Figure, y: float, label: str = "chance", **kw: Any) -> go.Figure:
    """A dashed grey level at `y` with its name written on it (chance, a uniform guess, ...)."""
    fig.add_hline(y=y, line=dict(dash="dash", color=CHANCE, width=1.5), annotation_text=label,
                  annotation_position="bottom right", annotation_font=dict(size=TICK_SIZE, color=CHANCE), **kw)
    return fig


def export_config(fmt: str = "png", *, filename: str = "labkit-chart") -> dict[str, Any]:
    """A plotly config whose camera button downloads `fmt` ("png" at 2x the size on screen, or
    "svg", a vector for papers). plotly draws the file in the browser: nothing is fetched."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt must be 'png' or 'svg', got {fmt!r}")
    return {"displaylogo": False, "displayModeBar": True, "responsive": True,
            "toImageButtonOptions": {"format": fmt, "scale": 2 if fmt == "png" else 1, "filename": filename},
            # the camera, zoom, pan and reset: a toolbar that fits on one row above a narrow chart's title
            "modeBarButtonsToRemove": ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d"]}


# A config is JSON (Streamlit and Jupyter both pass it as such), so its one download button has
# one format: PNG at 2x here; SVG_EXPORT_CONFIG is the same with an SVG download.
EXPORT_CONFIG = export_config("png")
SVG_EXPORT_CONFIG = export_config("svg")


def number(x: float, *, signed: bool = False, digits: int = 3) -> str:
    """A value with the precision it needs: three significant digits, so that a small value never
    reads as 0.000 ("0.42", "0.0031", "2.1e-05"; "+0.0120" signed)."""
    if not math.isfinite(x):
        return str(x)
    sign = "+" if signed else ""
    if x == 0:
        return f"{sign}0" if not signed else "0"
    if abs(x) < 1e-3 or abs(x) >= 1e6:
        return f"{x:{sign}.{digits - 1}e}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:{sign}.{decimals}f}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """"1 layer", "2 layers", "1,024 tokens": a number with its noun, in the right number."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def token_text(token: str) -> str:
    """A token as a label: whitespace made visible, never an empty string."""
    text = str(token).replace("\n", "\\n").replace("\t", "\\t")
    return text if text.strip() else "␣" * max(1, len(text))


def shorten(text: str, max_chars: int) -> str:
    """`text` cut at a word boundary to at most `max_chars` characters, with an ellipsis when cut."""
    text = str(text)
    if len(text) <= max_chars:
        return text
    cut = text[:max(1, max_chars - 1)]
    if " " in cut.strip() and not text[len(cut)].isspace():
        cut = cut[:cut.rstrip().rfind(" ")]
    return cut.rstrip() + "…"


def tick_labels(tokens: Sequence[str], max_chars: int = 12) -> list[str]:
    """Axis labels for token positions: numbered (so repeated tokens stay apart and positions can
    be read) and truncated with an ellipsis: ["0 The", "1 film", "2 extraordin…"]."""
    out = []
    for i, token in enumerate(tokens):
        text = token_text(token)
        out.append(f"{i} {text if len(text) <= max_chars else text[:max(1, max_chars - 1)] + '…'}")
    return out


def log_ticks(low: float, high: float) -> list[float]:
    """Tick values for a log axis from `low` to `high` (> 0), to be written out in full (so no tick
    reads as a bare '2' or '5'): 1-2-5 steps per decade over a wide range, else the multiples of
    the smallest round step (0.1, 0.2, 0.5, 1, ...) that gives at most eight ticks."""
    if not (0 < low <= high):
        return []
    if math.log10(high / low) > 1.5:
        values = [m * 10.0 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
                  for m in (1, 2, 5)]
        inside = [v for v in values if low <= v <= high]
        return inside if len(inside) <= 10 else [v for v in inside if math.log10(v).is_integer()]
    for exponent in range(math.floor(math.log10(high - low + 1e-12)) - 1, math.ceil(math.log10(high)) + 1):
        for m in (1, 2, 5):
            step = m * 10.0 ** exponent
            ticks = [round(k * step, 12) for k in range(math.ceil(low / step), math.floor(high / step) + 1)]
            if len(ticks) <= 8:
                return ticks
    return [low, high]


def log_axis(fig: go.Figure, values: Sequence[float], axis: str = "y", **kw: Any) -> None:
    """Make `axis` logarithmic with `log_ticks` over the finite positive `values` it shows (or
    those values themselves where the range is too narrow for two round ticks: one point or two)."""
    finite = [float(v) for v in values if isinstance(v, numbers.Real) and not isinstance(v, bool)
              and math.isfinite(v) and v > 0]  # numpy's numbers too
    update = fig.update_yaxes if axis == "y" else fig.update_xaxes
    update(type="log", **kw)
    if finite:
        ticks = log_ticks(min(finite), max(finite))
        ticks = ticks if len(ticks) >= 2 else sorted(set(finite))[:8]
        update(tickvals=ticks, ticktext=[f"{v:,.4g}" for v in ticks], **kw)
