"""A real Chromium that may talk only to this machine, for the app and JupyterLab browser tests.

Debian's chromium driven by Playwright (never `playwright install`); every request to a host
other than localhost is aborted and recorded, as are the page's JavaScript errors.
"""

from __future__ import annotations

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


@dataclass
class OfflinePage:
    page: Any
    blocked: list[str] = field(default_factory=list)  # the non-local URLs asked for
    errors: list[str] = field(default_factory=list)  # JavaScript errors


@contextmanager
def offline_page(width: int, height: int) -> Iterator[OfflinePage]:
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(("data:", "blob:", "about:")) or urlparse(url).hostname in LOCAL:
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
