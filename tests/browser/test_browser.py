"""The app in a real browser: `streamlit run` on 127.0.0.1, driven by Playwright with Debian's
Chromium at 1600 px wide, every request to a non-local host blocked. Every page, and every tab
of the pages that have tabs, is screenshot and fails the test on a Python traceback, an empty
chart or a request to another host; and the pages' own checks: bertviz draws SVG inside its
iframe with no CDN (with its save buttons), a live run's curve grows, Generate shows a step's
distribution. Screenshots go to a folder printed at the end; with LABKIT_SCREENSHOTS=DIR a small
copy of one per page (the README's) is written there too.

Needs /usr/bin/chromium (`apt-get install chromium`; `.ci/run` installs it) and the `playwright`
Python package (dev extra); never `playwright install`."""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import pytest
from PIL import Image

import appruns
from offline_browser import (
    CHROMIUM,
    COMPARE_TABS,
    OfflinePage,
    offline_page,
    plot_traces,
    problems,
    settle,
    streamlit_server,
    wait_idle,
)

WIDTH, HEIGHT = 1600, 1800
README_SHOT = {"width": 1000, "colours": 96, "max_bytes": 200_000}  # the README's copies
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(),
                                 reason="no /usr/bin/chromium: install Debian's chromium "
                                        "(apt-get install -y chromium; .ci/run does) to run the browser test")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A fresh `streamlit run` on a free local port; yields the base URL, the process start time,
    the seconds until the server answered, and the runs folder."""
    root = appruns.runs_root(tmp_path_factory)
    with streamlit_server(root, tmp_path_factory.mktemp("streamlit")) as s:
        yield s.base, s.started, s.ready_s, root


def iframe_svg_elements(page, index: int) -> int:
    """SVG elements bertviz drew inside the index-th st.iframe on the page."""
    return page.evaluate("""(i) => {
        const f = [...document.querySelectorAll('iframe')][i];
        const d = f && f.contentDocument;
        return d ? d.querySelectorAll('#vis svg *').length : 0; }""", index)


class Visit:
    """A walk through the app: each view checked (no traceback, no empty chart, nothing fetched
    from another host) and screenshot."""

    def __init__(self, view: OfflinePage, base: str, shots: Path, readme: Path | None):
        self.view, self.page, self.base, self.shots, self.readme = view, view.page, base, shots, readme
        self.seen: list[str] = []

    def goto(self, path: str, heading: str) -> None:
        self.page.goto(self.base + path)
        self.page.get_by_role("heading", name=heading, exact=True).wait_for(timeout=60_000)
        wait_idle(self.page)

    def choose(self, label: str, option: str) -> None:
        """Pick `option` in the select box labelled `label`."""
        self.page.get_by_test_id("stSelectbox").filter(has_text=label).first.click()
        self.page.get_by_role("option", name=option, exact=True).click()
        settle(self.page)

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name, exact=True).click()
        settle(self.page)  # the click reruns the script

    def check(self, shot: str, *, readme: str | None = None) -> None:
        """The view as it is now: no traceback, every visible chart drew, no request left this
        machine; screenshot as `shot`.png (and, for the README, a small copy named `readme`)."""
        wait_idle(self.page)
        found = problems(self.page)
        if self.view.blocked:
            found.append(f"requests to other hosts: {self.view.blocked}")
        self.page.screenshot(path=self.shots / f"{shot}.png")
        assert not found, f"{shot}: " + "; ".join(found)
        self.seen.append(shot)
        if readme and self.readme:
            small(self.shots / f"{shot}.png", self.readme / f"{readme}.png")


def small(source: Path, target: Path) -> None:
    """A copy of a screenshot for the README: narrower, fewer colours, under 200 kB."""
    image = Image.open(source).convert("RGB")
    width = README_SHOT["width"]
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(README_SHOT["colours"]).save(target, optimize=True)
    assert target.stat().st_size < README_SHOT["max_bytes"], f"{target} is {target.stat().st_size:,} bytes"


def start_and_runs(v: Visit, started: float, root: Path, timings: dict) -> None:
    """The first page (the cold start), then the runs table with the damaged runs named."""
    page = v.page
    # Start: the first page; the cold start is the server start plus it drawn.
    v.goto("/", "labkit")
    timings["cold start: process start to the first page drawn (s)"] = time.perf_counter() - started
    page.get_by_text("A path through it").first.wait_for()
    v.check("01-start", readme="start")

    # Runs: the table, the damaged runs named.
    v.goto("/runs", "labkit runs")
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    page.get_by_text("is corrupt").filter(visible=True).first.wait_for()
    v.check("02-runs", readme="runs")


def curves_and_learn(v: Visit, started: float, root: Path, timings: dict) -> None:
    """Loss curves, following a live run as its metrics grow; Watch it learn."""
    page = v.page
    # Loss curves: plotly draws traces; the live run's curve grows when its metrics do.
    v.goto("/curves", "Loss curves")
    page.locator('[data-testid="stPlotlyChart"] .scatterlayer .trace').first.wait_for(timeout=30_000)
    wait_idle(page)
    traces = plot_traces(page)
    assert {"tiny-lstm", "tiny-transformer", "tiny-lstm val"} <= {t["name"] for t in traces}
    page.get_by_text("Live: live-transformer still training").filter(visible=True).first.wait_for()
    before = next(t["n"] for t in traces if t["name"] == appruns.LIVE)
    with open(root / appruns.LIVE / "metrics.jsonl", "a", encoding="utf-8") as f:
        for step in (18, 20):
            f.write(json.dumps({"step": step, "tokens": step * 256, "elapsed_s": 1.0 + step / 10,
                                "loss": 3.9, "ppl": 49.4}) + "\n")
    page.wait_for_function("""(n) => {
        const p = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
        const t = p && p.data && p.data.find(t => t.name === 'live-transformer');
        return t && t.x.length >= n + 2; }""", arg=before, timeout=20_000)
    v.check("03-curves", readme="curves")

    # Watch it learn: the tiny Transformer's heads at each evaluation, beside its loss curve.
    v.goto("/learn", "Watch it learn")
    page.get_by_text("One line per head").filter(visible=True).first.wait_for(timeout=30_000)
    v.check("04-learn", readme="learn")


def attention_tabs(v: Visit, started: float, root: Path, timings: dict) -> None:
    """Attention: bertviz offline, saved as SVG and PNG, then every tab."""
    page = v.page
    # Attention: bertviz draws SVG inside its iframe with every CDN blocked, with its save
    # buttons and nothing cut off below the last token; then every other tab.
    v.goto("/attention", "Attention")
    v.choose("Transformer run", appruns.TRANSFORMER)  # the run a classifier was fine-tuned from
    words = ("the dogs near the old cat run quickly . " * 8).split()[:64]
    box = page.get_by_label("Sentence (type your own)")
    box.fill(" ".join(words))
    t0 = time.perf_counter()
    box.press("Control+Enter")
    page.get_by_text("64 tokens, 2 layers x 4 heads").wait_for(timeout=30_000)
    page.wait_for_function("""() => {
        const f = [...document.querySelectorAll('iframe')][0];
        const d = f && f.contentDocument;
        return d && d.querySelectorAll('#vis svg text').length >= 128; }""", timeout=30_000)
    wait_idle(page)
    timings["attention page, 64-token input, to head view drawn (s)"] = time.perf_counter() - t0
    assert iframe_svg_elements(page, 0) > 100, "bertviz head view drew no SVG"
    assert frame_shows_all(page, 0), "the head view is cut off: its save buttons are below the frame"
    v.check("05-attention-head-view", readme="attention")
    saved_head_view(page, v.shots)
    v.tab("model view")
    page.wait_for_function("""() => {
        const f = [...document.querySelectorAll('iframe')].find(f => f.offsetParent !== null);
        return f && f.contentDocument && f.contentDocument.querySelectorAll('#vis svg *').length > 50; }""",
                           timeout=30_000)
    v.check("06-attention-model-view")
    v.tab("heatmaps")
    page.locator('[data-testid="stPlotlyChart"] .heatmaplayer').first.wait_for(state="attached")
    v.check("07-attention-heatmaps")
    saved_charts(page, v.shots)
    for tab, shown in (("statistics", "Attention sink"), ("surgery", "minus the intact model"),
                       ("fine-tuning", "Total variation"), ("long inputs", "cells")):
        v.tab(tab)
        page.get_by_text(shown).filter(visible=True).first.wait_for(timeout=60_000)
        v.check("08-attention-" + tab.replace(" / ", "-").replace(" ", "-"))
    caption = page.get_by_text("Computed in").filter(visible=True).first.inner_text()
    tokens, computed = re.search(r"([\d,]+) tokens in .* Computed in ([\d.]+) s", caption).groups()
    timings[f"long inputs, {tokens} tokens pooled, computed in (s)"] = float(computed)


def compare_tabs(v: Visit, started: float, root: Path, timings: dict) -> None:
    """Compare: an LSTM and a Transformer, every tab."""
    page = v.page
    # Compare: an LSTM and a Transformer, every tab.
    t0 = time.perf_counter()
    v.goto("/compare", "Compare")
    page.locator('[data-testid="stPlotlyChart"] .heatmaplayer').first.wait_for(state="attached", timeout=60_000)
    wait_idle(page)
    timings["compare page, to the saliency maps drawn (s)"] = time.perf_counter() - t0
    v.check("09-compare-saliency", readme="compare")
    for tab, shown in COMPARE_TABS:
        v.tab(tab)
        page.get_by_text(shown).filter(visible=True).first.wait_for(timeout=60_000)
        v.check("10-compare-" + tab.replace(" ", "-"))


def lens_generate_finetune(v: Visit, started: float, root: Path, timings: dict) -> None:
    """The logit lens, Generate (tokens arrive, then each step), Fine-tuning."""
    page = v.page
    # Logit lens: a layer x position grid.
    v.goto("/lens", "Logit lens")
    page.locator('[data-testid="stPlotlyChart"] .heatmaplayer').first.wait_for(state="attached", timeout=30_000)
    v.check("11-lens", readme="lens")

    # Generate: two runs side by side; tokens arrive, then each step's distribution.
    v.goto("/generate", "Generate")
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("The drawn token is marked").nth(1).wait_for(timeout=60_000)
    v.check("12-generate", readme="generate")

    # Fine-tuning: cards read generically; confusion matrix and learning curve drawn.
    v.goto("/finetune", "Fine-tuning")
    page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').nth(1).wait_for(timeout=30_000)
    page.get_by_text("Prediction:").filter(visible=True).first.wait_for()  # the real classifier run
    assert page.get_by_role("link", name="Loss curves").is_visible()  # our navigation, not pages/
    v.check("13-finetune", readme="finetune")


def download(page, click, folder: Path) -> Path:
    """What clicking (`click()`) downloads, saved in `folder`."""
    with page.expect_download(timeout=20_000) as info:
        click()
    path = folder / info.value.suggested_filename
    info.value.save_as(path)
    return path


def saved_head_view(page, folder: Path) -> None:
    """bertviz's head view saves itself: the SVG it drew, and a PNG at twice its size on screen."""
    frame = page.frame_locator("iframe").first
    svg = download(page, frame.get_by_role("button", name="Save SVG").click, folder)
    assert svg.name == "labkit-head-view.svg"
    text = svg.read_text(encoding="utf-8")
    assert text.startswith("<svg") and text.count("<text") >= 128  # every token, on both sides
    png = download(page, frame.get_by_role("button", name="Save PNG (2x)").click, folder)
    width = page.evaluate("() => document.querySelector('iframe').contentDocument"
                          ".querySelector('#vis svg').getBoundingClientRect().width")
    with Image.open(png) as image:
        assert png.name == "labkit-head-view.png" and image.width == 2 * math.ceil(width)


def saved_charts(page, folder: Path) -> None:
    """A chart's camera button downloads it as PNG, or as SVG once the sidebar says so."""
    camera = page.locator('[data-testid="stPlotlyChart"]').first.locator('[data-title^="Download plot"]').first

    def click() -> None:
        page.locator('[data-testid="stPlotlyChart"]').first.hover()
        camera.click()

    png = download(page, click, folder)
    with Image.open(png) as image:
        assert png.suffix == ".png" and image.width > 1000  # twice the chart's size on screen
    for choice in ("SVG", "PNG"):  # the sidebar's choice, then back
        page.get_by_text(choice, exact=True).click()
        page.wait_for_function("""(f) => [...document.querySelectorAll('.js-plotly-plot')]
            .every(p => p._context && p._context.toImageButtonOptions.format === f)""", arg=choice.lower())
        wait_idle(page)
        if choice == "SVG":
            svg = download(page, click, folder)
            assert svg.suffix == ".svg" and svg.read_text(encoding="utf-8").lstrip().startswith("<svg")


def frame_shows_all(page, index: int) -> bool:
    """Whether the index-th iframe is tall enough for everything in it (its last element, the save
    buttons, inside the frame)."""
    return page.evaluate("""(i) => {
        const f = [...document.querySelectorAll('iframe')][i];
        const d = f.contentDocument, bar = d.querySelector('.labkit-export');
        return !!bar && bar.getBoundingClientRect().bottom <= f.getBoundingClientRect().height; }""", index)


GROUPS = {  # one test per group of pages, each in its own offline browser page
    "start_and_runs": ["01-start", "02-runs"],
    "curves_and_learn": ["03-curves", "04-learn"],
    "attention_tabs": ["05-attention-head-view", "06-attention-model-view", "07-attention-heatmaps",
                       "08-attention-statistics", "08-attention-surgery", "08-attention-fine-tuning",
                       "08-attention-long-inputs"],
    "compare_tabs": ["09-compare-saliency"] + ["10-compare-" + tab.replace(" ", "-") for tab, _ in COMPARE_TABS],
    "lens_generate_finetune": ["11-lens", "12-generate", "13-finetune"],
}


@pytest.mark.parametrize("group", GROUPS)
def test_pages_in_a_real_browser_offline(group, server, tmp_path_factory, capsys):
    """Each view of the group: no traceback, every chart drawn, nothing fetched from another host,
    no JavaScript error; a screenshot of each (and the README's copies when LABKIT_SCREENSHOTS is set)."""
    base, started, ready_s, root = server
    shots = tmp_path_factory.mktemp("screenshots")
    readme = Path(os.environ["LABKIT_SCREENSHOTS"]) if os.environ.get("LABKIT_SCREENSHOTS") else None
    timings: dict[str, float] = {"cold start: process start to server answering (s)": ready_s} \
        if group == "start_and_runs" else {}

    with offline_page(WIDTH, HEIGHT) as view:
        visit = Visit(view, base, shots, readme)
        try:
            globals()[group](visit, started, root, timings)
        except Exception:
            view.page.screenshot(path=shots / "failure.png")
            with capsys.disabled():
                print(f"\nbrowser test {group} failed; screenshots in {shots}")
            raise
    blocked, errors = view.blocked, view.errors

    with capsys.disabled():
        print(f"\nbrowser test {group}: {len(visit.seen)} views checked, screenshots in {shots}")
        for name, seconds in timings.items():
            print(f"browser test: {name}: {seconds:.2f}")
    assert visit.seen == GROUPS[group]
    assert not errors, f"JavaScript errors: {errors}"
    assert not blocked, f"the app asked for non-local resources: {blocked}"
