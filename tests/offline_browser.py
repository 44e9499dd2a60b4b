"""A real Chromium that may talk only to this machine, for the app and JupyterLab browser tests.

Debian's chromium driven by Playwright (never `playwright install`); every request to a host
other than localhost is aborted and recorded, as are the page's JavaScript errors.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
LOCAL = {"127.0.0.1", "localhost", "::1"}


REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app" / "main.py"
# The Compare page's tabs after the first, each with a text that shows once it is drawn.
COMPARE_TABS = (("surprisal", "bits/token"), ("loss by position", "windows of"), ("word frequency", "log-spaced buckets"),
                ("agreement by distance", "chance is 50%"), ("surgery", "minus the intact model"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    base: str  # http://127.0.0.1:PORT
    started: float  # time.perf_counter() when the process was started
    ready_s: float  # seconds until it answered its health check
    log: Path


@contextmanager
def serving(command: list[str], *, cwd: Path, env: dict[str, str], log_path: Path, ready_url: str,
            what: str, timeout_s: float = 60) -> Iterator[float]:
    """A server process started with `command`, waited for until `ready_url` answers 200 (the test
    fails with its log's end if it dies or is not ready in `timeout_s`); stopped after. Yields the
    seconds it took to answer."""
    import pytest

    log = open(log_path, "w+")  # noqa: SIM115
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"{what} did not start:\n{log.read()[-3000:]}")
            time.sleep(0.2)
        yield time.perf_counter() - started
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextmanager
def streamlit_server(root: Path, log_dir: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """A fresh `streamlit run app/main.py` on a free local port, reading the runs folder `root`."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
               "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with serving(command, cwd=REPO, env=os.environ | {"LABKIT_RUNS": str(root)} | (env or {}),
                 log_path=log_dir / "server.log", ready_url=base + "/_stcore/health", what="streamlit") as ready_s:
        yield Server(base, started, ready_s, log_dir / "server.log")


RUNNING = '[data-testid="stApp"][data-test-script-state="running"]'


def wait_idle(page: Any, timeout_ms: int = 60_000) -> None:
    """Until the script run ends: Streamlit marks its app root `data-test-script-state="running"`
    while a script runs (its status widget is not shown with toolbarMode "minimal")."""
    page.wait_for_function(f"() => !document.querySelector('{RUNNING}')", timeout=timeout_ms)


def settle(page: Any, timeout_ms: int = 300_000) -> None:
    """After a click: until the rerun it starts has begun (if it is not over already) and ended."""
    try:
        page.wait_for_selector(RUNNING, timeout=1_500)
    except Exception:  # noqa: BLE001 (a fast rerun may start and end unseen)
        pass
    wait_idle(page, timeout_ms)


def plot_traces(page: Any, chart_index: int = 0) -> list[dict]:
    """The traces plotly drew in the chart_index-th chart: name, type and point count."""
    return page.evaluate("""(i) => {
        const plots = document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot');
        if (plots.length <= i || !plots[i].data) return [];
        return plots[i].data.map(t => ({name: t.name, type: t.type || 'scatter',
                                        n: (t.x || t.z || []).length}));
    }""", chart_index)


@dataclass
class OfflinePage:
    page: Any
    blocked: list[str] = field(default_factory=list)  # the non-local URLs asked for
    errors: list[str] = field(default_factory=list)  # JavaScript errors


@contextmanager
def offline_page(width: int, height: int, allow: set[str] = frozenset()) -> Iterator[OfflinePage]:
    """A page of a fresh Chromium that reaches this machine only (`allow`: more host names of it)."""
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(("data:", "blob:", "about:")) or urlparse(url).hostname in LOCAL | set(allow):
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            context.route("**/*", route)
            view = OfflinePage(context.new_page(), blocked)
            view.page.on("pageerror", lambda e: view.errors.append(str(e)))
            yield view
        finally:
            browser.close()


# Every plotly chart that is visible (Streamlit's chart box, drawn into or not yet, the grey
# placeholder it shows while it loads, or a bare plotly div), and how many marks it drew (lines,
# points, bars, heatmap images): a chart with axes and no marks, or one never drawn, is empty.
_CHART_MARKS = """() => [...document.querySelectorAll(
        '[data-testid="stPlotlyChart"], [data-testid="stSkeleton"], .js-plotly-plot')]
    .filter(p => p.offsetParent !== null && !(p.matches('.js-plotly-plot') && p.closest('[data-testid="stPlotlyChart"]')))
    .map(box => {
        const p = box.matches('.js-plotly-plot') ? box : box.querySelector('.js-plotly-plot');
        if (!p) return {title: '(not drawn)', marks: 0};
        return {title: (p.querySelector('.gtitle') || {}).textContent || '',
                marks: [...p.querySelectorAll('.heatmaplayer image, .barlayer .point path, .scatterlayer .js-line,'
                                              + ' .scatterlayer .point, .scatterlayer .textpoint, .pielayer path')]
                       .filter(e => e.tagName !== 'path' || (e.getAttribute('d') || '').length > 4).length};
    })"""


def chart_marks(page: Any) -> list[dict]:
    """The visible plotly charts on `page` (a Playwright page or frame): title and marks drawn."""
    return page.evaluate(_CHART_MARKS)


def problems(page: Any, *, charts_drawn_ms: int = 20_000) -> list[str]:
    """What is wrong with what `page` shows: a Python traceback (Streamlit's exception box, or a
    traceback's text anywhere), or a chart that drew nothing (waited for up to `charts_drawn_ms`,
    as plotly draws after the page)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    found = []
    boxes = page.locator('[data-testid="stException"]')
    if boxes.count():
        found.append(f"a Python exception on the page: {boxes.first.inner_text()[:600]}")
    body = page.inner_text("body")
    if "Traceback (most recent call last)" in body:
        found.append("a Python traceback on the page: ..." + body[body.index("Traceback"):][:600])
    try:
        page.wait_for_function(f"() => ({_CHART_MARKS})().every(c => c.marks > 0)", timeout=charts_drawn_ms)
    except PlaywrightTimeout:
        found += [f"an empty chart ({c['title'] or 'untitled'})" for c in chart_marks(page) if not c["marks"]]
    return found


# The layout of every visible chart and tab bar, read from the page: boxes that must not overlap
# (a chart's title and plotly's toolbar, a legend and the plotting area, two panel titles), a
# heatmap's plotting area too thin to read, a tab bar whose last tab is scrolled out of sight.
_LAYOUT = """() => {
    const box = e => { const r = e.getBoundingClientRect(); return {l: r.left, t: r.top, r: r.right, b: r.bottom}; };
    const hit = (a, b, pad) => a.l < b.r - pad && b.l < a.r - pad && a.t < b.b - pad && b.t < a.b - pad;
    const shown = e => e && e.offsetParent !== null && e.getBoundingClientRect().width > 0;
    const found = [];
    [...document.querySelectorAll('.js-plotly-plot')].filter(shown).forEach((p, i) => {
        const name = ((p.querySelector('.gtitle') || {}).textContent || '').slice(0, 60) || `chart ${i}`;
        const title = p.querySelector('.gtitle'), bar = p.querySelector('.modebar');
        const plots = [...p.querySelectorAll('.cartesianlayer .subplot .bg, .nsewdrag')].filter(shown).map(box);
        if (title && bar && shown(bar) && hit(box(title), box(bar), 1))
            found.push(`${name}: the title lies under the plotly toolbar`);
        const legend = p.querySelector('.legend');
        if (legend && shown(legend)) {
            const l = box(legend);
            if (plots.some(a => hit(l, a, 2))) found.push(`${name}: the legend covers the plotting area`);
        }
        const labels = [...p.querySelectorAll('.annotation-text')].filter(shown).map(box);
        for (let a = 0; a < labels.length; a++) for (let b = a + 1; b < labels.length; b++)
            if (hit(labels[a], labels[b], 1)) { found.push(`${name}: two panel titles overlap`); a = labels.length; break; }
        if (p.querySelector('.heatmaplayer image'))
            plots.forEach(a => { if (a.r - a.l < 60 || a.b - a.t < 40)
                found.push(`${name}: a heatmap drawn in a sliver (${Math.round(a.r - a.l)} x ${Math.round(a.b - a.t)} px)`); });
    });
    [...document.querySelectorAll('[role="tablist"]')].filter(shown).forEach(list => {
        if (list.scrollWidth > list.clientWidth + 2)
            found.push(`a tab bar hides tabs (${list.scrollWidth} px of tabs in ${list.clientWidth} px)`);
    });
    return found;
}"""


def layout_problems(page: Any) -> list[str]:
    """What overlaps or cannot be read in the charts and tab bars `page` shows (see _LAYOUT)."""
    return page.evaluate(_LAYOUT)
