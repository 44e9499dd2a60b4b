"""The app in a real browser: `streamlit run` on 127.0.0.1, driven by Playwright with Debian's
Chromium, every request to a non-local host blocked. Checks that every page draws, that
bertviz draws SVG inside its iframe with no CDN, that the plotly charts draw (the Compare
page's in each of its tabs), and that a live run's curve grows. Screenshots go to a folder
printed at the end.

Needs /usr/bin/chromium (`apt-get install chromium`; `.ci/run` installs it) and the `playwright`
Python package (dev extra); never `playwright install`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import appruns
from offline_browser import CHROMIUM, offline_page

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app" / "main.py"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(),
                                 reason="no /usr/bin/chromium: install Debian's chromium "
                                        "(apt-get install -y chromium; .ci/run does) to run the browser test")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A fresh `streamlit run` on a free local port; yields the base URL, the process start time,
    the seconds until the server answered, and the runs folder."""
    root = appruns.runs_root(tmp_path_factory)
    port = free_port()
    env = os.environ | {"LABKIT_RUNS": str(root)}
    log = open(tmp_path_factory.mktemp("streamlit") / "server.log", "w+")  # noqa: SIM115
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
                             "--server.port", str(port), "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"streamlit did not start:\n{log.read()[-3000:]}")
            time.sleep(0.2)
        yield base, started, time.perf_counter() - started, root
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Until the script run ends (Streamlit shows a status widget while it runs)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout_ms)


def iframe_svg_elements(page, index: int) -> int:
    """SVG elements bertviz drew inside the index-th st.iframe on the page."""
    return page.evaluate("""(i) => {
        const f = [...document.querySelectorAll('iframe')][i];
        const d = f && f.contentDocument;
        return d ? d.querySelectorAll('#vis svg *').length : 0; }""", index)


def plot_traces(page, chart_index: int = 0) -> list[dict]:
    """The traces plotly drew in the chart_index-th chart: name, type and point count."""
    return page.evaluate("""(i) => {
        const plots = document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot');
        if (plots.length <= i || !plots[i].data) return [];
        return plots[i].data.map(t => ({name: t.name, type: t.type || 'scatter',
                                        n: (t.x || t.z || []).length}));
    }""", chart_index)


def visit_every_page(page, base: str, started: float, root: Path, shots: Path, timings: dict) -> None:
    # Runs: the cold start is the server start plus the first page drawn.
    page.goto(base + "/")
    page.get_by_role("heading", name="labkit runs").wait_for(timeout=60_000)
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    wait_idle(page)
    timings["cold start: process start to Runs page drawn (s)"] = time.perf_counter() - started
    page.get_by_text("is corrupt").filter(visible=True).first.wait_for()
    page.screenshot(path=shots / "1-runs.png")

    # Loss curves: plotly draws traces; the live run's curve grows when its metrics do.
    page.goto(base + "/curves")
    page.get_by_role("heading", name="Loss curves").wait_for()
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
    page.screenshot(path=shots / "2-curves.png")

    # Attention: bertviz draws SVG inside its iframe with every CDN blocked; our heatmaps too.
    page.goto(base + "/attention")
    page.get_by_role("heading", name="Attention").wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('iframe')].length >= 2", timeout=30_000)
    wait_idle(page)
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
    page.screenshot(path=shots / "3-attention-head-view.png")
    page.get_by_role("tab", name="bertviz: model view").click()
    page.wait_for_function("""() => {
        const f = [...document.querySelectorAll('iframe')][1];
        return f && f.contentDocument && f.contentDocument.querySelectorAll('#vis svg *').length > 50; }""",
                           timeout=30_000)
    page.screenshot(path=shots / "4-attention-model-view.png")
    page.get_by_role("tab", name="heatmaps").click()
    page.locator('[data-testid="stPlotlyChart"] .heatmaplayer').first.wait_for(state="attached")
    grid = plot_traces(page, 0)
    assert sum(t["name"] != "causal mask" for t in grid) == 8  # 2 layers x 4 heads
    page.screenshot(path=shots / "5-attention-heatmaps.png")
    page.get_by_role("tab", name="head statistics").click()
    page.get_by_text("Attention sink").filter(visible=True).first.wait_for()
    page.screenshot(path=shots / "6-attention-stats.png")

    # Compare: an LSTM's and a Transformer's saliency beside the Transformer's attention, then
    # surprisal, loss by position and agreement by distance, each in its tab.
    t0 = time.perf_counter()
    page.goto(base + "/compare")
    page.get_by_role("heading", name="Compare").wait_for()
    page.locator('[data-testid="stPlotlyChart"] .heatmaplayer').first.wait_for(state="attached", timeout=60_000)
    wait_idle(page)
    timings["compare page, to the saliency maps drawn (s)"] = time.perf_counter() - t0
    maps = plot_traces(page, 0)
    assert sum(t["name"] != "causal mask" for t in maps) == 3  # two runs' saliency, one head's attention
    page.screenshot(path=shots / "6b-compare-saliency.png")
    for tab, shot, shown in (("surprisal", "6c-compare-surprisal", "bits/token"),  # the coloured tokens
                             ("loss by position", "6d-compare-positions", "windows of 32 tokens"),
                             ("agreement by distance", "6e-compare-agreement", "chance is 50%")):
        page.get_by_role("tab", name=tab).click()
        page.get_by_text(shown).filter(visible=True).first.wait_for()
        page.screenshot(path=shots / f"{shot}.png")
    names = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')]
        .map(p => (p.data || []).map(t => t.name))""")
    assert len(names) == 5 and ["surprisal"] in names
    assert names.count([appruns.STALE, appruns.LIVE]) == 2, names  # loss by position, agreement

    # Generate: two runs side by side; tokens arrive and the probability charts draw.
    page.goto(base + "/generate")
    page.get_by_role("heading", name="Generate").wait_for()
    wait_idle(page)
    page.get_by_role("button", name="Generate").click()
    page.locator('[data-testid="stPlotlyChart"] .barlayer .trace').nth(1).wait_for(timeout=60_000)
    wait_idle(page)
    assert len(plot_traces(page, 0)) == 3 and len(plot_traces(page, 1)) == 3
    page.screenshot(path=shots / "7-generate.png")

    # Fine-tuning: cards read generically; confusion matrix and learning curve drawn.
    page.goto(base + "/finetune")
    page.get_by_role("heading", name="Fine-tuning").wait_for()
    page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').nth(1).wait_for(timeout=30_000)
    wait_idle(page)
    page.get_by_text("Prediction:").filter(visible=True).first.wait_for()  # the real classifier run
    assert page.get_by_role("link", name="Loss curves").is_visible()  # our navigation, not pages/
    page.screenshot(path=shots / "8-finetune.png")


def test_every_page_in_a_real_browser_offline(server, tmp_path_factory, capsys):
    base, started, ready_s, root = server
    shots = tmp_path_factory.mktemp("screenshots")
    timings: dict[str, float] = {"cold start: process start to server answering (s)": ready_s}

    with offline_page(1400, 1800) as view:
        try:
            visit_every_page(view.page, base, started, root, shots, timings)
        except Exception:
            view.page.screenshot(path=shots / "failure.png")
            with capsys.disabled():
                print(f"\nbrowser test failed; screenshots in {shots}")
            raise
    blocked, errors = view.blocked, view.errors

    with capsys.disabled():
        print(f"\nbrowser test: screenshots in {shots}")
        for name, seconds in timings.items():
            print(f"browser test: {name}: {seconds:.2f}")
        print(f"browser test: requests to non-local hosts blocked: {len(blocked)}")
    assert not errors, f"JavaScript errors: {errors}"
    assert not blocked, f"the app asked for non-local resources: {blocked}"
