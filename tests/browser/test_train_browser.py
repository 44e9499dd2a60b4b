"""Train from the browser, end to end: a real `streamlit run` on an empty runs folder and Debian's
Chromium (offline). On the Train page a tiny LSTM pretraining is started; its progress bar and live
loss curve show while it trains; Stop ends it with a checkpoint (the run's card says interrupted,
at the step the page names); Resume continues it from there, and a second Stop checkpoints it
further on, each step logged once. (The run is far longer than the test: a busy machine's browser
must never see it finish before Stop; finishing after a resume is tested in tests/unit/test_queue.py
and tests/app/test_train_page.py.) No traceback, no empty chart, no request to another host.
Needs /usr/bin/chromium and the `playwright` package (never `playwright install`)."""

from __future__ import annotations

import re

import pytest

from labkit.runs import RunDir, read_metrics

from offline_browser import CHROMIUM, offline_page, plot_traces, problems, settle, streamlit_server, wait_idle

STEPS = 1_000_000  # a tiny LSTM trains 20 to 70 steps a second: it is always running when Stop is pressed
NAME = "browser-run"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install -y chromium)")]


def progress_text(page) -> str:
    return page.evaluate("""() => { const box = document.querySelector('[data-testid="stProgress"]');
                                    return box ? box.innerText : ''; }""")


def stopped(page, run: RunDir, after: int = 0) -> int:
    """The step the page says the run stopped at (the first past `after`: an earlier stop may still
    be on the page), checked against the run's card and checkpoint."""
    page.wait_for_function("""(after) => [...document.body.innerText.matchAll(/stopped at step ([\\d,]+) with a checkpoint/g)]
        .some(m => Number(m[1].replace(/,/g, '')) > after)""", arg=after, timeout=60_000)
    step = max(int(m.replace(",", "")) for m in re.findall(r"stopped at step ([\d,]+) with a checkpoint",
                                                             page.inner_text("body")))
    assert after < step < STEPS
    assert (run.read_card()["status"], run.read_card()["steps"]) == ("interrupted", step)
    assert int(run.latest_checkpoint().name.removeprefix("step-")) == step
    wait_idle(page)
    found = problems(page)
    assert not found, found
    return step


def test_start_watch_stop_and_resume_a_training_in_a_real_browser(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    with streamlit_server(root, tmp_path) as server, offline_page(1400, 1600) as view:
        page = view.page
        try:
            page.goto(server.base + "/train")
            page.get_by_role("heading", name="Train", exact=True).wait_for(timeout=60_000)
            wait_idle(page)
            steps = page.get_by_label("Steps")
            steps.fill(str(STEPS))
            steps.press("Enter")
            settle(page)
            page.get_by_label("Run name", exact=False).fill(NAME)
            page.get_by_label("Run name", exact=False).press("Enter")
            settle(page)
            page.get_by_role("button", name="Start pretraining").click()

            # it trains: the bar counts steps and the curve draws (the fragment refreshes every 2 s)
            page.wait_for_function("""() => { const b = document.querySelector('[data-testid="stProgress"]');
                                              return b && /training: step [1-9]/.test(b.innerText); }""", timeout=60_000)
            assert f"of {STEPS:,}" in progress_text(page)
            page.wait_for_function("""(name) => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')]
                .some(p => p.data && p.data.some(t => t.name === name && t.x.length >= 2))""", arg=NAME, timeout=60_000)
            assert {NAME, f"{NAME} (raw)"} <= {t["name"] for t in plot_traces(page)}
            page.get_by_role("button", name="Stop").click()

            run = RunDir(root / NAME)
            first = stopped(page, run)
            page.get_by_role("button", name="Resume").first.click()
            page.wait_for_function("""(after) => { const b = document.querySelector('[data-testid="stProgress"]');
                const m = b && b.innerText.match(/training: step ([\\d,]+)/);
                return m && Number(m[1].replace(/,/g, '')) > after; }""", arg=first, timeout=60_000)
            page.get_by_role("button", name="Stop").click()
            second = stopped(page, run, after=first)
            logged = [r["step"] for r in read_metrics(run.metrics_path) if "loss" in r]
            assert logged == sorted(set(logged)) and logged[-1] <= second  # resumed where it stopped: each step once
            assert any(first < s <= second for s in logged)
            page.screenshot(path=tmp_path / "train.png", full_page=True)
        except Exception:
            page.screenshot(path=tmp_path / "failure.png", full_page=True)
            print(f"browser test failed; the screenshot and the server's log are in {tmp_path}")
            raise
    assert not view.errors, f"JavaScript errors: {view.errors}"
    assert not view.blocked, f"the app asked for non-local resources: {view.blocked}"

