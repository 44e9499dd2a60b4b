"""The notebooks: they are stored without outputs; each one runs end to end in the smoke profile
in JupyterLab in a real browser, with a real kernel and every non-local request blocked (bertviz
must draw offline), and the notebook JupyterLab saves must hold the outputs a smoke run makes.
Without Chromium, each runs headless with nbclient instead and the same checks read its outputs.

The smoke runs read the corpora from $LABKIT_DATA when it is set and fall back to the synthetic
corpus and task when it is not; they never download (LABKIT_OFFLINE=1). Their runs go to a
temporary folder (LABKIT_RUNS)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import nbformat
import pytest

from labkit.notebook_exec import execute

from offline_browser import CHROMIUM, free_port, offline_page, serving

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NAMES = ["01_data_and_tokenizers", "02_rnn_language_model", "03_transformer_language_model",
         "04_rnn_vs_transformer", "05_finetuning_sst2", "06_attention_explorer"]
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"

def smoke_env(runs: Path) -> dict[str, str]:
    return {"LABKIT_PROFILE": "smoke", "LABKIT_RUNS": str(runs), "LABKIT_OFFLINE": "1"}


def test_the_six_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == NAMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has stored outputs: clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{path.name} stores widget state"


def check_outputs(nb, path: Path) -> None:
    """What a smoke run of notebook `path` must have left in its cells' outputs."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(PLOTLY in o.get("data", {}) for o in outputs), "no plotly figure drawn"
    assert all("https://cdn.plot.ly/" in o["data"].get("text/html", "") for o in outputs if PLOTLY in o.get("data", {})), \
        "a figure without its HTML fallback, for front ends that draw no plotly mime type (labkit.notebook_display)"
    per_cell = max(sum(PLOTLY in o.get("data", {}) for o in c.outputs) for c in nb.cells if c.cell_type == "code")
    assert per_cell <= 4, f"a cell drew {per_cell} figures: a live curve must redraw one figure, not add new ones"
    # (JupyterLab's plotly renderer stores a PNG of each figure beside its JSON when it saves)
    assert not any("image/png" in o.get("data", {}) and PLOTLY not in o.get("data", {}) for o in outputs), \
        "a matplotlib-style image slipped in"
    assert any(WIDGET in o.get("data", {}) for o in outputs), "no widget (controls or tqdm bar)"
    summary = nb.cells[-1].outputs
    assert summary and summary[-1]["data"]["text/markdown"].startswith("- "), "no closing summary"
    assert "nan" not in summary[-1]["data"]["text/markdown"].lower().split()
    assert not {"“”", "''", "None"} & set(summary[-1]["data"]["text/markdown"].split()), "an empty or None value"
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    from labkit.exercises import names

    # the stored notebook's exercises are stubs: each check ran, and said so instead of failing
    assert sorted(line.split(":")[0][2:] for line in printed.splitlines() if line.startswith("… ")) == \
        sorted(names(path.stem[:2])), "an exercise's check did not run, or did not report its unfinished stub"
    assert "** →" not in printed and "\n →" not in printed, "a prompt printed as nothing"
    for i, cell in enumerate(nb.cells):  # a table shown once, not by display() and again as the cell's value
        tables = [o["data"]["text/html"] for o in cell.get("outputs", []) if "<table" in o.get("data", {}).get("text/html", "")]
        assert len(tables) == len(set(tables)), f"cell {i} shows the same table twice"
    if path.stem.startswith("06"):
        frames = [o["data"]["text/html"] for o in outputs if "srcdoc=" in o.get("data", {}).get("text/html", "")]
        assert len(frames) == 2, "the bertviz head view and model view"
        assert all("cdn" not in f.lower() and "require.js" not in f for f in frames)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM.exists(), reason="the JupyterLab run below checks the same outputs, from the "
                                              "notebook it saves; this headless run stands in without a browser")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_in_the_smoke_profile(path, tmp_path, monkeypatch):
    for key, value in smoke_env(tmp_path / "runs").items():
        monkeypatch.setenv(key, value)  # the kernel inherits this environment
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    cell_times = execute(nb, path, timeout=180)  # raises CellExecutionError, with the traceback, if a cell fails
    took = time.perf_counter() - start
    slowest = ", ".join(f"cell {i} {t:.1f}s" for t, i in sorted(((t, i) for i, t in enumerate(cell_times)), reverse=True)[:3])
    print(f"\n{path.stem}: {took:.1f}s (slowest: {slowest})")
    check_outputs(nb, path)


def saved_with_outputs(path: Path, page, timeout_s: float = 30.0):
    """The notebook at `path` once JupyterLab has written it with its outputs. It waits through
    `page`: Playwright's sync API passes the save request through the page's request filter (see
    offline_browser) only while a call of its own runs, never during a plain sleep."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            nb = nbformat.read(path, as_version=4)
            if nb.cells[-1].get("outputs"):
                return nb
        except (OSError, ValueError):
            pass  # not written yet, or being written
        if time.monotonic() > deadline:
            raise AssertionError(f"JupyterLab did not save {path.name} with its outputs in {timeout_s:.0f} s")
        page.wait_for_timeout(300)


# --- JupyterLab in a real browser ---------------------------------------------------------
@pytest.fixture
def jupyterlab(tmp_path):
    """`jupyter lab` on a free local port with a token, serving copies of the notebooks (so the
    browser's autosave never writes outputs into the repository), every cell rendered (no
    windowing: a chart out of view is still drawn, and checked)."""
    root = tmp_path / "lab"
    root.mkdir()
    for path in NOTEBOOKS:
        shutil.copy(path, root)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port, token = free_port(), "labkit-test-token"
    env = os.environ | smoke_env(tmp_path / "runs") | {
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces")}
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port),
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    base = f"http://127.0.0.1:{port}"
    with serving(command, cwd=root, env=env, log_path=tmp_path / "jupyterlab.log",
                 ready_url=f"{base}/api/status?token={token}", what="jupyter lab", timeout_s=90):
        yield base, token, tmp_path


HEAD_VIEW_FITS = """() => { const f = document.querySelectorAll('.jp-OutputArea iframe')[0];
    const d = f.contentDocument.documentElement; return [d.scrollHeight, f.clientHeight]; }"""


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: install Debian's chromium "
                                                   "(apt-get install -y chromium) to run the browser test")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_in_jupyterlab_offline_at_1600_px(path, jupyterlab, capsys):
    """Each notebook run whole in JupyterLab in Chromium, 1600 px wide, every non-local request
    blocked: no Python traceback, no chart that drew nothing, a closing summary; screenshots of
    the charts. Notebook 06's bertviz views must draw inside their frames, nothing cut off. The
    notebook JupyterLab saves then passes the smoke run's checks of its outputs (`check_outputs`)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from offline_browser import chart_marks, problems

    base, token, tmp = jupyterlab
    shots = tmp / "screenshots"
    shots.mkdir()
    with offline_page(1600, 1000) as view:
        page = view.page
        try:
            page.goto(f"{base}/lab/tree/{path.name}?token={token}")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=90_000)
            select = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
            try:  # JupyterLab may ask which kernel to start: the notebook's own, python3
                select.wait_for(timeout=15_000)
                select.click()
            except PlaywrightTimeout:
                pass
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)
            t0 = time.perf_counter()
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            # The closing summary is the last cell's output: every cell ran (or one failed first).
            last = page.locator(".jp-Notebook .jp-Cell").last.locator(".jp-OutputArea-output")
            failed = page.locator(".jp-OutputArea-output", has_text="Traceback (most recent call last)")
            last.or_(failed).first.wait_for(timeout=420_000)
            if failed.count():  # say which cell failed, not that the notebook was never saved whole
                raise AssertionError(f"{path.name}: a cell failed:\n{failed.first.inner_text()[-3000:]}")
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
            run_s = time.perf_counter() - t0
            page.get_by_role("menuitem", name="File", exact=True).click()
            page.locator(".lm-Menu").get_by_text("Save Notebook", exact=True).click()
            saved = saved_with_outputs(tmp / "lab" / path.name, page)  # the outputs the kernel sent: checked below
            plots = page.locator(".jp-OutputArea .js-plotly-plot")
            counts_seen: list[int] = []  # widget outputs (interact, live curves) draw after the kernel is idle:
            while len(counts_seen) < 30 and (len(counts_seen) < 3 or len(set(counts_seen[-3:])) > 1):
                counts_seen.append(plots.count())  # wait until the number of figures holds for 3 s
                page.wait_for_timeout(1000)
            found = problems(page)
            charts = chart_marks(page)
            summary = last.first.inner_text() if last.count() else ""
            for i in range(min(plots.count(), 12)):
                plots.nth(i).scroll_into_view_if_needed()
                page.screenshot(path=shots / f"{path.stem}-{i:02d}.png")
            fits = counts = sliders = None
            if path.stem.startswith("06"):
                page.wait_for_function("""() => {
                    const f = [...document.querySelectorAll('.jp-OutputArea iframe')][0];
                    const d = f && f.contentDocument;
                    return d && d.querySelectorAll('svg *').length > 100; }""", timeout=60_000)
                counts = page.evaluate("""() => [...document.querySelectorAll('.jp-OutputArea iframe')]
                    .map(f => f.contentDocument ? f.contentDocument.querySelectorAll('svg *').length : -1)""")
                fits = page.evaluate(HEAD_VIEW_FITS)
                sliders = page.locator(".jp-OutputArea .widget-slider").count()
                frames = page.locator(".jp-OutputArea iframe")
                for i, name in enumerate(("head-view", "model-view")):
                    frames.nth(i).scroll_into_view_if_needed()
                    page.screenshot(path=shots / f"06-{name}.png")
                page.locator(".jp-OutputArea .widget-slider").first.scroll_into_view_if_needed()
                page.screenshot(path=shots / "06-widgets.png")
        except Exception:
            page.screenshot(path=shots / "failure.png")
            with capsys.disabled():
                print(f"\nbrowser test failed; screenshots in {shots}, server log {tmp / 'jupyterlab.log'}")
            raise
    blocked, errors = view.blocked, view.errors

    with capsys.disabled():
        print(f"\n{path.stem} in JupyterLab at 1600 px: all cells ran in {run_s:.1f}s; {len(charts)} plotly figures; "
              f"bertviz SVG elements per view {counts}; head view height {fits}; non-local requests blocked: "
              f"{len(blocked)} {json.dumps(blocked[:5])}; screenshots {shots}")
    check_outputs(saved, path)
    assert not found, found
    assert charts and all(c["marks"] > 0 for c in charts)
    assert summary.strip(), "no closing summary"
    assert not blocked, f"the page asked for non-local resources: {blocked}"
    assert not errors, f"JavaScript errors: {errors}"
    if path.stem.startswith("06"):
        assert len(counts) == 2 and min(counts) > 100, f"bertviz views drew {counts} SVG elements"
        assert fits[0] <= fits[1], f"the head view needs {fits[0]} px and its frame is {fits[1]} px: cut off"
        assert sliders >= 2
