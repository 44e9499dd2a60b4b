"""Views you can share: each page keeps what it shows (the run, the sentence, the head, the tab, the
sampling settings...) in its URL, so a link opens the same view in another browser.

The page itself is in the URL's path (Streamlit's navigation: /attention, /lens, ...); its state
is in the query (?run=tiny-transformer&text=the+dogs...&tab=heatmaps). A page calls `begin()`
first, `shared(...)` for the first value of each widget it shares (`tab(...)` for its tab bar;
`ui.pick_run(..., param=...)` for a run), and `publish()` last, which writes the widgets' values
into the URL (only this page's: any other parameter is dropped) and shows the link in the
sidebar, with its copy button. A fragment with shared widgets ends with `fragment_done()`.

A value is taken from the URL only when the page was opened from a link: the URL's query is not
the one this session last wrote (a new browser, a pasted link, the browser's back and forward
buttons). Each value is checked against what the page offers (a run that is there, a number in the
widget's range, a tab that exists...): one it cannot take (an unknown run, a huge number, text
where a number goes, `../etc`) is left out, with a one-line note in the sidebar, and the widget
starts as it would without a link. What a link never carries: the runs folder (a path on the
server, set in the sidebar), the chart-download format, and results that a press of a button made
(Generate's text: the link holds its prompt, seed and settings, which draw the same text again)."""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

import common

CURRENT = "share::link"  # session key: this script run's Link (begin() makes it)
PUBLISHED = "share::published"  # session key: the query this session last wrote into the URL
MAX_TEXT = 10_000  # characters of a sentence or prompt a link may carry
MAX_VALUES = 64  # values of one parameter (runs, heads) a link may carry

Query = dict[str, list[str]]


@dataclass(frozen=True)
class Codec:
    """How a widget's value goes into the URL (`show`: one string, or a list for several) and
    comes back (`parse`, given every value of the parameter; it raises ValueError, with the
    reason, for one it does not take)."""

    parse: Callable[[list[str]], Any]
    show: Callable[[Any], str | list[str]]


def choice(options: Sequence[Any], labels: Sequence[str] | None = None) -> Codec:
    """One of `options`, written as its label (str(option) unless `labels` are given)."""
    labels = [str(o) for o in options] if labels is None else list(labels)
    by_label = dict(reversed(list(zip(labels, options))))  # the first option of a label wins

    def parse(values: list[str]) -> Any:
        if values[-1] not in by_label:
            raise ValueError("not one of the choices here")
        return by_label[values[-1]]

    def show(value: Any) -> str:
        return next((label for label, o in zip(labels, options) if o == value), str(value))

    return Codec(parse, show)


def choices(options: Sequence[Any], labels: Sequence[str] | None = None) -> Codec:
    """Several of `options` (a multiselect); none at all is written as one empty value."""
    one = choice(options, labels)

    def parse(values: list[str]) -> list[Any]:
        values = [v for v in values if v != ""]
        if len(values) > MAX_VALUES:
            raise ValueError(f"more than {MAX_VALUES} values")
        return list(dict.fromkeys(one.parse([v]) for v in values))  # one unknown value: none taken

    return Codec(parse, lambda value: [one.show(v) for v in value] or "")


def number(lo: float, hi: float, *, step: float | None = None, whole: bool = False) -> Codec:
    """A number from lo to hi (on the widget's steps; `whole`: an int)."""
    def parse(values: list[str]) -> float | int:
        text = values[-1].strip()
        if len(text) > 32:
            raise ValueError("not a number")
        try:
            value = float(text)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"not from {show(lo)} to {show(hi)}")
        if whole:
            if not value.is_integer():
                raise ValueError("not a whole number")
            return int(value)
        if step:
            value = min(hi, max(lo, lo + round((value - lo) / step) * step))
        return float(round(value, 10))  # a float slider takes floats only (a link's "0" too)

    def show(value: float) -> str:
        return str(int(value)) if whole or float(value).is_integer() else f"{round(float(value), 10):g}"

    return Codec(parse, show)


def text(limit: int = MAX_TEXT) -> Codec:
    """Free text (a sentence, a prompt) of at most `limit` characters."""
    def parse(values: list[str]) -> str:
        if len(values[-1]) > limit:
            raise ValueError(f"longer than {limit:,} characters")
        return values[-1]

    return Codec(parse, str)


def _flag(values: list[str]) -> bool:
    word = values[-1].strip().lower()
    if word not in ("true", "false"):
        raise ValueError("not true or false")
    return word == "true"


FLAG = Codec(_flag, lambda value: "true" if value else "false")


def query() -> Query:
    """The URL's query as this run sees it: each parameter's values."""
    return {k: st.query_params.get_all(k) for k in st.query_params}


def _normal(values: dict[str, str | list[str]]) -> Query:
    return {k: [v] if isinstance(v, str) else list(v) for k, v in values.items()}


@dataclass
class Link:
    """One script run's shared widgets: parameter -> (widget key, codec)."""

    query: Query
    from_link: bool  # the URL's query is not the one this session wrote: the values come from a link
    history: bool  # the browser's back or forward button: the link's values replace the widgets'
    notes: Any  # the sidebar container for the notes and the link
    params: dict[str, tuple[str, Codec]] = field(default_factory=dict)
    published: bool = False  # publish() ran in this script run


def begin() -> Link:
    """At the top of a page: read the URL; what the page shares is registered by `shared()`."""
    now = query()
    link = Link(now, bool(now) and now != st.session_state.get(PUBLISHED), _history_navigation(),
                st.sidebar.container())
    st.session_state[CURRENT] = link
    return link


def _history_navigation() -> bool:
    """Whether this run was started by the browser's back or forward button."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        return bool(getattr(get_script_run_ctx(), "is_history_navigation", False))
    except Exception:  # noqa: BLE001 (an internal of Streamlit's: without it, back does not restore)
        return False


def current() -> Link | None:
    return st.session_state.get(CURRENT)


def shared(param: str, key: str, default: Any, codec: Codec) -> Any:
    """The value the widget `key` starts with: the link's `param` when the page was opened from a
    link and the value is one the widget takes, else `default`. The widget's value goes into the
    URL as `param` when the page publishes. Call it just before drawing the widget."""
    link = current()
    if link is None:
        return default
    link.params[param] = (key, codec)
    if not link.from_link or param not in link.query:
        return default
    raw = link.query[param]
    try:
        value = codec.parse(raw)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
        shown = common.md_escape(_shorten(", ".join(raw)))
        link.notes.caption(f"Not taken from the link: {common.md_escape(param)} = {shown} ({e}).")
        return default
    if link.history and key in st.session_state:
        st.session_state[key] = value  # back or forward: the widget shows that entry's value
    return value


def tab(param: str, key: str, labels: Sequence[str]) -> None:
    """Just before `st.tabs(labels, key=key, on_change="rerun")`: the link's open tab. (Its label goes
    into the session state, not into `default=`: Streamlit counts a tab bar's default as part of
    what the bar is, and a default that changed between runs would make a new bar, open at it.)"""
    label = shared(param, key, None, choice(labels))
    if label is not None and key not in st.session_state:
        st.session_state[key] = label


def _shorten(value: str, limit: int = 40) -> str:
    value = " ".join(value.split())  # one line
    return value if len(value) <= limit else value[:limit] + "…"


def values(link: Link) -> Query:
    """The query that holds the page's shared widgets as they are now (a widget not drawn in this
    run, or showing nothing, is left out)."""
    found: dict[str, str | list[str]] = {}
    for param, (key, codec) in link.params.items():
        value = st.session_state.get(key)
        if value is not None:
            found[param] = codec.show(value)
    return _normal(found)


def url(params: Query) -> str:
    """The link: the page's address as the browser has it (None in tests) and the query."""
    encoded = urllib.parse.urlencode(params, doseq=True)
    return (st.context.url or "") + (f"?{encoded}" if encoded else "")


def publish() -> None:
    """At the end of a page: the shared widgets' values into the URL (replacing its query) and the
    link in the sidebar."""
    link = current()
    if link is None:
        return
    now = values(link)
    if now != query():
        st.query_params.from_dict(now)
    st.session_state[PUBLISHED] = now
    link.published = True
    link.notes.caption("Link to this view, as you see it (point at it for its copy button):")
    link.notes.code(url(now), language=None, wrap_lines=False)  # one line: a long sentence scrolls


def fragment_done() -> None:
    """At the end of a fragment that draws shared widgets: when the fragment, rerun alone, changed
    one of them, the whole page runs again so that the URL and the link show it."""
    link = current()
    if link is not None and link.published and values(link) != st.session_state.get(PUBLISHED):
        st.rerun(scope="app")
