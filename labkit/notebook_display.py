"""Display helpers for the notebooks: the house style for every figure (labkit.inspect.style, with
its export buttons), a live loss curve for the Trainer, HTML documents in an iframe, closing
summaries and results cards as tables. Display only: nothing here trains."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.base_renderers import HtmlRenderer

from labkit.errors import LabkitError
from labkit.inspect import style

TEMPLATE = "labkit"
# Beside plotly's JSON mime type, which JupyterLab and VS Code draw, every figure carries an HTML
# fallback (a div and plotly.js from its CDN, as plotly's own Colab renderer makes) for the front
# ends that draw no plotly mime type: Colab, Kaggle, nbviewer, an exported page.
HTML_RENDERER = "labkit_html"
HTML_DEFAULTS = ("colab", "kaggle", "notebook", "notebook_connected", "azure", "cocalc", "databricks", HTML_RENDERER)


def house_style(export: str = "png") -> None:
    """Every plotly figure of this process in the house style: a "labkit" template on top of
    plotly_white (fonts, hover labels, colours), and a camera button that downloads each figure
    as PNG at 2x (`style.EXPORT_CONFIG`), or with `export="svg"` as SVG, a vector for papers.
    Figures made by labkit.inspect are styled already; this reaches the notebooks' own."""
    layout = style.apply(go.Figure()).layout
    pio.templates[TEMPLATE] = go.layout.Template(layout=dict(
        font=layout.font, title_font=layout.title.font, hoverlabel=layout.hoverlabel, colorway=layout.colorway,
        xaxis=dict(tickfont=layout.xaxis.tickfont, title_font=layout.xaxis.title.font, automargin=True),
        yaxis=dict(tickfont=layout.yaxis.tickfont, title_font=layout.yaxis.title.font, automargin=True)))
    pio.templates.default = f"{style.BASE_TEMPLATE}+{TEMPLATE}"
    pio.renderers[HTML_RENDERER] = HtmlRenderer(connected=True, include_plotlyjs="cdn")
    for name in ("plotly_mimetype", "jupyterlab", "notebook", "notebook_connected", "vscode", HTML_RENDERER):
        pio.renderers[name].config = style.export_config(export)
    default = pio.renderers.default  # "" outside a notebook; Colab's and Kaggle's have HTML already
    if default and not set(default.split("+")) & set(HTML_DEFAULTS):
        pio.renderers.default = f"{default}+{HTML_RENDERER}"


def html_fallback(fig: go.Figure) -> str:
    """`fig` as the HTML a front end without plotly's mime renderer draws (see HTML_RENDERER)."""
    renderer = pio.renderers[HTML_RENDERER] if HTML_RENDERER in pio.renderers else HtmlRenderer(
        connected=True, include_plotlyjs="cdn", config=style.export_config())
    return renderer.to_mimebundle(fig.to_dict())["text/html"]


# --- live curves --------------------------------------------------------------------------
PLOTLY_MIME = "application/vnd.plotly.v1+json"
X_KEYS = {"step": "step", "tokens": "tokens", "training time (s)": "elapsed_s"}


class LiveCurves:
    """A plotly figure of training loss (lines) and validation loss (markers) that grows while
    runs train. `callback(name)` gives a Trainer callback for one run; several runs share the
    figure. Redraws at most every `min_interval_s` seconds (and at each evaluation and the end)."""

    def __init__(self, x: str = "tokens", title: str = "", min_interval_s: float = 1.0,
                 display: bool = True):
        if x not in X_KEYS:
            raise LabkitError(f"x must be one of {', '.join(X_KEYS)}")
        self.x, self.min_interval_s = x, min_interval_s
        self.fig = style.apply(go.Figure(layout=dict(title=title or None, xaxis_title=x, yaxis_title=style.loss_title(),
                                                     legend=dict(orientation="h", y=-0.2))), height=380)
        self._last = 0.0
        self._view = None
        if display:
            import ipywidgets
            from IPython.display import display as ipy_display

            # One output widget whose single output is replaced at each redraw. A display updated
            # in place (display_id) is not redrawn by JupyterLab's plotly renderer (plotly.py#3053):
            # the live curve stayed empty there. A new output it draws.
            self._view = ipywidgets.Output()
            ipy_display(self._view)
            self.refresh()

    def callback(self, name: str) -> _LiveRun:
        colors = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2")
        color = colors[len(self.fig.data) // 2 % len(colors)]
        self.fig.add_scatter(x=[], y=[], name=name, mode="lines", line=dict(color=color))
        self.fig.add_scatter(x=[], y=[], name=f"{name} val", mode="markers+lines",
                             marker=dict(color=color, size=11, symbol="diamond", line=dict(color="white", width=1)),
                             line=dict(color=color, dash="dot", width=1))
        return _LiveRun(self, len(self.fig.data) - 2)

    def add_point(self, trace: int, x: float, y: float, force: bool = False) -> None:
        t = self.fig.data[trace]
        t.x, t.y = (*t.x, x), (*t.y, y)
        now = time.monotonic()
        if force or now - self._last >= self.min_interval_s:
            self.refresh()

    def _bundle(self) -> dict[str, Any]:
        """The figure as plotly's JSON mime type and the HTML fallback (plotly.js from its CDN, never
        inlined at every redraw)."""
        return {PLOTLY_MIME: self.fig.to_plotly_json(), "text/html": html_fallback(self.fig),
                "text/plain": f"<live curves: {len(self.fig.data) // 2} runs>"}

    def refresh(self) -> None:
        self._last = time.monotonic()
        if self._view is not None:
            self._view.outputs = ({"output_type": "display_data", "data": self._bundle(), "metadata": {}},)


class _LiveRun:
    """The Trainer's callback for one run of a LiveCurves figure (its on_step, on_eval, on_end)."""

    def __init__(self, live: LiveCurves, trace: int):
        self.live, self.trace = live, trace

    def _x(self, record: dict[str, Any]) -> float:
        return record[X_KEYS[self.live.x]]

    def on_step(self, trainer: Any, record: dict[str, Any]) -> None:
        self.live.add_point(self.trace, self._x(record), record["loss"])

    def on_eval(self, trainer: Any, record: dict[str, Any]) -> None:
        self.live.add_point(self.trace + 1, self._x(record), record["val_loss"], force=True)

    def on_end(self, trainer: Any, card: dict[str, Any]) -> None:
        self.live.refresh()


def html_frame(document: str, height: int = 500) -> Any:
    """A whole HTML document (such as labkit's offline bertviz views) in an iframe: its scripts
    and globals stay apart from the notebook page, and it draws with no network."""
    from IPython.display import HTML

    return HTML(f'<div class="labkit-frame"><iframe srcdoc="{html.escape(document, quote=True)}" '
                f'style="width:100%;height:{int(height)}px;border:1px solid #ddd"></iframe></div>')


def say(lines: Sequence[str], title: str = "") -> Any:
    """A markdown list, for a closing summary written from computed numbers."""
    from IPython.display import Markdown

    return Markdown((f"### {title}\n\n" if title else "") + "\n".join(f"- {line}" for line in lines))


CARD_FIELDS = {"parameters": "parameters", "steps": "steps", "tokens_seen": "tokens seen",
               "wall_time_s": "training time (s)", "tokens_per_s": "tokens/s (training)",
               "best_val_ppl": "best val perplexity", "test_ppl": "test perplexity"}


def card_table(cards: dict[str, dict[str, Any]], fields: dict[str, str] | None = None) -> Any:
    """Results cards side by side (one column per run), numbers formatted for reading."""
    import pandas as pd

    def show(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    fields = fields or CARD_FIELDS
    return pd.DataFrame({name: {label: show(card.get(key)) for key, label in fields.items()}
                         for name, card in cards.items()})


def fmt_ppl(loss: float) -> str:
    return f"{math.exp(min(loss, 50)):,.1f}"
