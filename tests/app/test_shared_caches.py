"""The caches one app server shares between its sessions (app/common.py): the run list is read
again as soon as a run's config or card changes, so a session never sees a stale list; a model and
an analysis of it are computed once for every session and again when the weights change (the
weights loaded once, each session's model a module tree of its own over them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP_DIR = Path(__file__).resolve().parents[2] / "app"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    from labkit.data import DataConfig
    from labkit.models import RNNConfig
    from labkit.train import TrainConfig
    from labkit.train.pretrain import pretrain

    pretrain(RNNConfig(d_embed=16, d_hidden=16, n_layers=1, dropout=0.0),
             TrainConfig(max_steps=2, eval_every=1, log_every=1, batch_size=4, seq_len=16, device="cpu"),
             DataConfig(corpus="synthetic", train_tokens=4000, eval_tokens=300), tmp_path / "runs" / "a")
    return tmp_path / "runs"


def run_table(root: Path) -> dict[str, dict]:
    """The Runs page's table in a new session: {run: row}."""
    at = AppTest.from_file(str(APP_DIR / "main.py"), default_timeout=60)
    at.session_state["runs_root"] = str(root)
    at.run()
    at.switch_page("views/runs.py").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    return {row["run"]: row for row in table.to_dict("records")}


def test_a_session_never_sees_a_stale_run_list(root: Path, monkeypatch) -> None:
    from labkit.runs import RunDir

    monkeypatch.delenv("LABKIT_RUNS", raising=False)
    assert run_table(root)["a"]["steps"] == 2
    run = RunDir(root / "a")
    run.write_card(run.read_card() | {"steps": 7})
    shutil.copytree(root / "a", root / "b")
    rows = run_table(root)
    assert rows["a"]["steps"] == 7 and rows["b"]["steps"] == 7


def test_an_analysis_is_computed_once_for_every_session(root: Path, common, monkeypatch) -> None:
    from labkit.runs import read_info

    calls = []

    def vocabulary(loaded, extra: int) -> int:
        calls.append(extra)
        return loaded.tokenizer.vocab_size + extra

    info = read_info(root / "a")
    shared = common._load(str(root / "a"), common.stamp(info)).model
    models = []  # the model each computation was given: a module tree of its own over the shared weights
    calls.clear()
    common._analysis.clear()

    def model_of(loaded, extra: int) -> int:
        models.append(loaded.model)
        return vocabulary(loaded, extra)

    first = common.analysis(model_of, info, 1)
    assert models[0] is not shared and [id(p) for p in models[0].parameters()] == [id(p) for p in shared.parameters()]
    copies = []  # a second session's hit makes no copy of the model either
    with monkeypatch.context() as patch:
        patch.setattr(common, "own_modules", lambda model: copies.append(model) or model)
        assert common.analysis(model_of, info, 1) == first and calls == [1] and copies == [] and len(models) == 1
    calls.clear()
    first = common.analysis(vocabulary, info, 1)
    assert common.analysis(vocabulary, info, 1) == first and calls == [1]  # a second session: no work
    assert common.analysis(vocabulary, info, 2) == first + 1 and calls == [1, 2]
    mine, yours = common.load(info), common.load(info)  # two sessions: a module tree each, one set of weights
    assert mine.model is not yours.model
    assert [id(p) for p in mine.model.parameters()] == [id(p) for p in yours.model.parameters()]
    weights = info.run.weights_path
    os.utime(weights, ns=(1, 1))  # rewritten, as by a run that trained on: a new stamp
    assert common.analysis(vocabulary, info, 1) == first and calls == [1, 2, 1]


def test_two_sessions_on_one_run_and_sentence_cost_one_computation(root: Path, common, monkeypatch) -> None:
    """The Logit lens page in two sessions, same run, same sentence: the model runs once (counted by
    a forward hook on the shared weights' model, which every session's copy carries); a third
    session with another sentence runs it again."""
    from labkit.runs import read_info

    monkeypatch.delenv("LABKIT_RUNS", raising=False)
    shared = common._load(str(root / "a"), common.stamp(read_info(root / "a"))).model
    common._analysis.clear()
    passes = []
    handle = shared.register_forward_hook(lambda module, args, output: passes.append(module))
    try:
        def lens(text: str | None = None) -> AppTest:
            at = AppTest.from_file(str(APP_DIR / "main.py"), default_timeout=60)
            at.session_state["runs_root"] = str(root)
            at.run()
            at.switch_page("views/lens.py").run()
            if text is not None:
                at.text_area[0].set_value(text).run()
            assert not at.exception, at.exception
            return at

        lens()
        assert len(passes) == 1
        lens()
        assert len(passes) == 1  # the second session read the first one's result
        lens("a sentence nobody typed before .")
        assert len(passes) == 2
    finally:
        handle.remove()
