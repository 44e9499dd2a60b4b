"""The app's pages, run by Streamlit's own test harness on run directories made here."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from labkit.rundir import RunDir

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")


def test_runs_page_lists_runs_and_flags_broken_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = RunDir(tmp_path / "runs" / "lstm-a")
    good.save_config({"kind": "lm", "model": {"family": "rnn", "cell": "lstm"}})
    good.write_card({"status": "finished", "steps": 10, "test_ppl": 123.4, "parameters": 99})
    (tmp_path / "runs" / "junk").mkdir()
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "labkit runs"
    table = at.dataframe[0].value
    assert list(table["run"]) == ["junk", "lstm-a"]
    assert table.set_index("run").loc["lstm-a", "test ppl"] == 123.4
    assert "labkit run directory" in table.set_index("run").loc["junk", "problem"]


def test_runs_page_explains_what_to_do_with_no_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "labkit pretrain" in at.info[0].value
