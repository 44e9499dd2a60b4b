"""The app's Runs and Loss curves pages over run directories damaged as a hostile user would:
JSON nested 100,000 levels deep, a card that is a link to /dev/zero, a config that is a FIFO, a
metrics line nested deep. The pages finish (no exception, no hang), say for each damaged run which
file is wrong and why, and still show the intact run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from labkit.data import DataConfig
    from labkit.models import RNNConfig
    from labkit.train import TrainConfig
    from labkit.train.pretrain import pretrain

    root = tmp_path_factory.mktemp("damaged") / "runs"
    pretrain(RNNConfig(d_embed=16, d_hidden=16, n_layers=1, dropout=0.0),
             TrainConfig(max_steps=4, eval_every=2, log_every=1, batch_size=4, seq_len=16, device="cpu"),
             DataConfig(corpus="synthetic", train_tokens=4000, eval_tokens=300), root / "ok")
    for name in ("deep-config", "deep-card", "zero-card", "fifo-config", "deep-metrics"):
        shutil.copytree(root / "ok", root / name)
    (root / "deep-config" / "config.json").write_text(DEEP)
    (root / "deep-card" / "card.json").write_text(DEEP)
    (root / "zero-card" / "card.json").unlink()
    (root / "zero-card" / "card.json").symlink_to("/dev/zero")
    (root / "fifo-config" / "config.json").unlink()
    os.mkfifo(root / "fifo-config" / "config.json")
    with open(root / "deep-metrics" / "metrics.jsonl", "a") as f:
        f.write(DEEP + "\n")
    return root


def page(root: Path, view: str | None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["runs_root"] = str(root)
    at.run()
    if view:
        at.switch_page(f"views/{view}.py").run()
    assert not at.exception, at.exception
    return at


def test_the_runs_page_names_each_damaged_file(root: Path, monkeypatch) -> None:
    monkeypatch.delenv("LABKIT_RUNS", raising=False)
    at = page(root, "runs")
    # (these runs trained 4 steps: each also carries the "has not learned enough" note, about its
    # numbers, not its files; left out here)
    said = [m.value for m in [*at.warning, *at.error] if "has not learned enough" not in m.value]

    def about(run: str) -> str:
        found = [text for text in said if f"**{run}**" in text]
        assert len(found) <= 1, found
        return found[0] if found else ""

    assert "deep-config/config.json is corrupt (nested more than 64 levels deep)" in about("deep-config")
    assert "deep-card/card.json is corrupt (nested more than 64 levels deep)" in about("deep-card")
    assert "zero-card/card.json leads outside the run (to /dev/zero)" in about("zero-card")
    assert "fifo-config/config.json is a FIFO, not a file" in about("fifo-config")
    assert about("ok") == "" and about("deep-metrics") == ""  # a damaged metrics line is skipped
    assert {"ok", "deep-metrics"} <= set(at.dataframe[0].value["run"])


def test_the_loss_curves_page_skips_a_deep_metrics_line(root: Path, monkeypatch) -> None:
    monkeypatch.delenv("LABKIT_RUNS", raising=False)
    at = page(root, "curves")
    assert at.title[0].value == "Loss curves"


@pytest.mark.parametrize("view", ["runs", "start", "curves", "learn", "finetune"])
def test_a_card_of_odd_types_and_a_huge_number_in_the_metrics_take_no_page_down(root: Path, tmp_path: Path,
                                                                                  monkeypatch, view: str) -> None:
    """One run's card has lists where numbers belong, another run's metrics hold a 400-digit number:
    every page finishes, shows the damaged run as damaged and the intact one as usual."""
    import json

    monkeypatch.delenv("LABKIT_RUNS", raising=False)
    runs = tmp_path / "runs"
    for name in ("ok", "listy", "huge"):
        shutil.copytree(root / "ok", runs / name)
    card = json.loads((runs / "listy" / "card.json").read_text())
    (runs / "listy" / "card.json").write_text(json.dumps(card | {"steps": [1, 2], "best_val_ppl": [3.0],
                                                                 "wall_clock_s": {"a": 1}}))
    with open(runs / "huge" / "metrics.jsonl", "a") as f:
        f.write('{"step": ' + "9" * 400 + ', "loss": 1.0, "val_loss": ' + "1" * 400 + "}\n")
    at = page(runs, view)  # (asserts no exception)
    if view == "runs":
        table = at.dataframe[0].value.set_index("run")
        assert table.loc["listy", "problem"] == "card.json is damaged: steps, best_val_ppl, wall_clock_s not a number"
        assert table.loc["ok", "steps"] == json.loads((runs / "ok" / "card.json").read_text())["steps"]
        assert table.loc["ok", "problem"] == ""
