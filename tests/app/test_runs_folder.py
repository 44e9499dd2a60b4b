"""Which runs folder the app reads (app/common.py): outside class mode the folder box accepts only
folders under the one the app was started in or under --runs-dir, after `..` and symbolic links are
followed, with a one-line refusal otherwise; in class mode (`labkit app --class`) there is no box and
every session reads the server's folder. Hostile paths, in Streamlit's AppTest and a real server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP_DIR = Path(__file__).resolve().parents[2] / "app"


@pytest.fixture()
def place(tmp_path: Path, common, monkeypatch) -> Path:
    """The app started in tmp/start, with runs in start/runs (one run folder, `r1`), a folder
    outside (tmp/outside, one run folder `secret`) and links from inside to it."""
    start, outside = tmp_path / "start", tmp_path / "outside"
    for run in (start / "runs" / "r1", start / "other" / "r2", outside / "secret"):
        run.mkdir(parents=True)
        (run / "config.json").write_text("{}")
    (start / "link-out").symlink_to(outside)
    (start / "runs" / "up").symlink_to(tmp_path)
    (start / "loop").symlink_to(start / "loop")
    monkeypatch.setattr(common, "STARTED_IN", start.resolve())
    monkeypatch.chdir(start)
    monkeypatch.delenv("LABKIT_RUNS", raising=False)
    monkeypatch.delenv("LABKIT_CLASS", raising=False)
    return start


@pytest.mark.parametrize("folder", ["runs", "./runs", "other", "runs/r1/..", "start-sub/../runs", "."])
def test_folders_under_the_start_are_accepted(place, common, folder):
    (place / "start-sub").mkdir()
    assert common.refusal(folder) is None


@pytest.mark.parametrize("folder", ["/", "/etc", "..", "../outside", "runs/../../outside", "link-out", "link-out/secret",
                                    "runs/up", "runs/up/outside", "~", "loop", "", "   ", "runs\x00x"])
def test_hostile_folders_are_refused_in_one_line(place, common, folder):
    why = common.refusal(folder)
    assert why and "\n" not in why
    if folder.strip() and "\x00" not in folder and folder != "loop":
        assert "outside the folder the app was started in" in why and "labkit app --runs-dir" in why


def test_runs_dir_widens_what_is_accepted(place, common, monkeypatch):
    outside = place.parent / "outside"
    assert common.refusal(str(outside)) is not None
    monkeypatch.setenv("LABKIT_RUNS", str(outside))
    assert common.refusal(str(outside)) is None and common.refusal(str(outside / "secret")) is None
    assert common.refusal(str(place.parent)) is not None


def runs_page(env_root: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP_DIR / "main.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at.switch_page("views/runs.py").run()


def shown_runs(at: AppTest) -> str:
    return " ".join(str(t.value) for t in at.dataframe) + " ".join(m.value for m in at.markdown)


def test_the_folder_box_refuses_and_keeps_the_folder_it_had(place, common):
    at = runs_page()
    assert "r1" in shown_runs(at) and "secret" not in shown_runs(at)
    box = at.sidebar.text_input(key="runs_root_input")
    for hostile in ("/etc", "../outside", "link-out"):
        box.set_value(hostile).run()
        assert not at.exception, at.exception
        errors = [e.value for e in at.sidebar.error]
        assert len(errors) == 1 and f"`{hostile}` is outside the folder the app was started in" in errors[0], errors
        assert at.session_state["runs_root"] == "runs"  # still the folder it had
        assert "r1" in shown_runs(at) and "secret" not in shown_runs(at)
    box.set_value("other").run()
    assert not at.sidebar.error and at.session_state["runs_root"] == "other"
    assert "r2" in shown_runs(at) and "r1" not in shown_runs(at)


def test_class_mode_has_no_folder_box_and_no_demo_button(place, common, monkeypatch):
    monkeypatch.setenv("LABKIT_CLASS", "1")
    monkeypatch.setenv("LABKIT_RUNS", str(place / "runs"))
    at = runs_page()
    assert not [t for t in at.sidebar.text_input if t.key == "runs_root_input"]
    assert any("class mode" in c.value for c in at.sidebar.caption)
    assert "r1" in shown_runs(at)
    assert at.button(key="train_demo").disabled
    at.session_state["runs_root"] = str(place.parent / "outside")  # whatever a session holds: the server's folder
    at.run()
    assert "r1" in shown_runs(at) and "secret" not in shown_runs(at)


@pytest.mark.slow
def test_labkit_app_class_serves_the_runs_folder_to_a_real_browser(tmp_path: Path):
    """`labkit app --class --runs-dir D`: a real server and Chromium see D's runs, no folder box."""
    from offline_browser import CHROMIUM, free_port, offline_page, serving, wait_idle

    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium")
    runs = tmp_path / "course"
    (runs / "lesson-one").mkdir(parents=True)
    (runs / "lesson-one" / "config.json").write_text("{}")
    port = free_port()
    command = [sys.executable, "-m", "labkit", "app", "--class", "--runs-dir", str(runs), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k not in ("LABKIT_RUNS", "LABKIT_CLASS")}
    with serving(command, cwd=tmp_path, env=env, log_path=tmp_path / "server.log",
                 ready_url=f"http://127.0.0.1:{port}/_stcore/health", what="labkit app"), \
            offline_page(1400, 1000) as view:
        page = view.page
        page.goto(f"http://127.0.0.1:{port}/runs")
        page.get_by_text("lesson-one").first.wait_for(timeout=60_000)
        wait_idle(page)
        body = page.inner_text("body")
        assert "class mode" in body and "Runs folder" not in body
        page.locator('[data-testid="stExpander"] summary', has_text="Demo models").click()  # the button's expander
        button = page.get_by_role("button", name="Train demo models")
        button.wait_for(timeout=60_000)
        assert button.is_disabled()
        assert not view.errors and not view.blocked, (view.errors, view.blocked)
