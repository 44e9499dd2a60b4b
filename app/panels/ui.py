"""What every page draws with: charts that export as PNG and SVG, tables with blank cells where a
value does not apply (not "None"), and run pickers that say when the run a page showed is gone
instead of quietly showing another one."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from labkit.inspect import style

import common
from panels import share

EXPORT_KEY = "export_format"  # the sidebar's choice: what a chart's camera button downloads
EXPORTS = {"PNG": style.EXPORT_CONFIG, "SVG": style.SVG_EXPORT_CONFIG}


def export_choice() -> None:
    """The sidebar's PNG / SVG switch for every chart's download button (plotly's camera)."""
    st.sidebar.radio("Chart downloads", list(EXPORTS), horizontal=True, key=EXPORT_KEY,
                     help="The camera button at the top right of every chart saves it: PNG at twice the "
                          "size on screen (slides), or SVG, a vector (papers). Drawn in the browser: "
                          "nothing is sent anywhere.")


def chart(fig: go.Figure, key: str, *, select: bool = False) -> Any:
    """A plotly chart whose camera button downloads it as PNG (2x) or SVG, as the sidebar says.
    With `select` a click on a point reruns the page; the return value then holds the selection."""
    config = EXPORTS[st.session_state.get(EXPORT_KEY) or "PNG"]
    name = "labkit-" + "".join(c if c.isalnum() else "-" for c in key.split("::")[0])
    config = config | {"toImageButtonOptions": config["toImageButtonOptions"] | {"filename": name}}
    if select:
        return st.plotly_chart(fig, key=key, config=config, on_select="rerun", selection_mode="points")
    return st.plotly_chart(fig, key=key, config=config)


def clicked_point(event: Any) -> dict[str, Any] | None:
    """The point clicked in a chart drawn with `chart(..., select=True)`, if any."""
    points = ((event or {}).get("selection") or {}).get("points") or []
    return points[0] if points else None


def _whole_numbers(values: pd.Series) -> bool:
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()
                                 for v in present)


def _formatter(spec: str) -> Callable[[Any], str]:
    def show(value: Any) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return spec.format(value) if math.isfinite(value) else str(value)
        return str(value)
    return show


def table(rows: Sequence[dict[str, Any]], key: str, formats: dict[str, str] | None = None, **kwargs: Any) -> None:
    """A table whose missing values are blank in every column; `formats` maps a column to a format
    ("{:,.2f}"); other columns of whole numbers get thousands separators."""
    frame = pd.DataFrame(list(rows))
    shown = {c: f for c, f in (formats or {}).items() if c in frame.columns}
    shown |= {c: "{:,.0f}" for c in frame.columns if c not in shown and _whole_numbers(frame[c])}
    # a format applies to numbers; anything else in such a column (a damaged card's list) shows as text
    styled = frame.style.format(na_rep="").format({c: _formatter(f) for c, f in shown.items()}, na_rep="")
    st.dataframe(styled, hide_index=True, width="stretch", key=key, **kwargs)


def when(timestamp: Any) -> str:
    """A Unix time as a local date and time ("2025-01-31 14:05"), or "" when it is not one."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not 0 < timestamp < 1e11:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def pick_run(label: str, names: Sequence[str], key: str, *, default: int = 0, taken: str | None = None,
             format_func: Callable[[str], str] = str, where: Any = st, param: str | None = None) -> str | None:
    """A run picker that remembers its run across pages. When that run is no longer in `names`
    (deleted, moved, or now unreadable) it says so and picks nothing until the user picks again, so
    the page never shows another run's results as if they were the same run's. `taken`: a run left
    out of `names` because another picker on the page holds it (not gone: this one starts afresh).
    `param`: the run is kept in the page's link under that name (panels.share); a link's run comes
    before the one remembered from another visit of the page."""
    memory, gone_key = f"{key}::chosen", f"{key}::gone"  # plain keys: Streamlit keeps them across pages
    linked = share.shared(param, key, None, share.choice(names)) if param else None
    previous = st.session_state.get(key, linked if linked is not None else st.session_state.get(memory))
    if previous is not None and previous == linked:
        st.session_state.pop(gone_key, None)  # the link names a run that is here
    if previous is not None and previous == taken:
        st.session_state.pop(key, None)
        st.session_state.pop(memory, None)
        previous = None
    if previous is not None and previous not in names:
        st.session_state[gone_key] = previous
        st.session_state.pop(key, None)
        st.session_state.pop(memory, None)
    gone = st.session_state.get(gone_key)
    if not names:
        return None
    index = None if gone else names.index(previous) if previous in names else min(default, len(names) - 1)
    choice = where.selectbox(label, list(names), index=index, key=key, format_func=format_func, placeholder="Pick a run")
    if choice is not None:
        st.session_state.pop(gone_key, None)
        st.session_state[memory] = choice
        return choice
    if gone:
        where.warning(f"**{common.md_escape(gone)}** is gone from the runs folder (deleted, moved, or no longer "
                      "readable) since this page showed it: pick a run above.")
    return None
