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
