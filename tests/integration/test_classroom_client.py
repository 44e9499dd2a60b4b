"""benchmarks/classroom.py's protocol clients against the real server: a Streamlit server started
on 127.0.0.1 on two tiny runs (an LSTM and a Transformer, trained here in seconds), and two students
at once through the whole path (Start, Runs, Attention, a typed sentence, Compare, Generate with a
seed and a length). No mocks: what is checked is what the server sent back over its websocket."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import appruns

REPO = Path(__file__).resolve().parents[2]


def load_classroom():
    """benchmarks/classroom.py as a module, without putting benchmarks/ on sys.path for the whole
    worker (its kernels.py would then shadow the `kernels` package that transformers imports)."""
    spec = importlib.util.spec_from_file_location("classroom", REPO / "benchmarks" / "classroom.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["classroom"] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


classroom = load_classroom()

TOKENS = 12  # not the page's default (40): the length set over the protocol is the one generated
TITLES = {"Start (connect)": "labkit", "Runs": "labkit runs", "Attention": "Attention",
          "Attention: sentence typed": "Attention", "Compare": "Compare", "Generate": "Generate",
          "Generate: settings": "Generate", classroom.GENERATED: "Generate"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/appruns.py's two tiny language models, without its broken runs (they show error boxes)."""
    root = tmp_path_factory.mktemp("classroom-runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        appruns.language_models(root)
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="module")
def server(tiny_runs: Path, tmp_path_factory: pytest.TempPathFactory):
    s = classroom.Server("test", tiny_runs, log_dir=tmp_path_factory.mktemp("classroom-log"))
    yield s
    s.stop()


def heading(drawn: classroom.Drawn) -> str:
    return next((h.body for _, h in drawn.of_kind("heading") if h.tag == "h1"), "")


def test_two_students_walk_the_whole_path_over_the_protocol(server: classroom.Server) -> None:
    students, _ = asyncio.run(classroom.round_of(2, server.url, timeout=90, tokens=TOKENS, keep=True))
    assert server.process.poll() is None
    assert [s.sentence for s in students][0] != students[1].sentence and students[0].seed != students[1].seed
    for s in students:
        assert s.errors == [], s.errors
        # every step timed, each answered by its script_finished, on the page it asked for
        assert set(s.times) == set(classroom.STEPS)
        assert all(t > 0 for t in s.times.values()), s.times
        assert set(s.drawn) == set(TITLES)
        for step, title in TITLES.items():
            assert s.drawn[step].seconds == s.times[step]
            assert heading(s.drawn[step]) == title, step
        assert s.times[classroom.FIRST_TOKEN] <= s.times[classroom.LAST_TOKEN] <= s.times[classroom.GENERATED]

        # the typed sentence is the one the head view draws (its tokens, as bertviz's data)
        typed = s.drawn["Attention: sentence typed"]
        words = s.sentence.split()
        assert any(json.dumps(words) in frame.srcdoc for _, frame in typed.of_kind("iframe"))
        assert not any(json.dumps(words) in frame.srcdoc for _, frame in s.drawn["Attention"].of_kind("iframe"))
        assert any(md.body.startswith(f"{len(words)} tokens,") for _, md in typed.of_kind("markdown"))

        # Generate: both runs side by side, each TOKENS tokens by the caption and the chart; the text
        # streamed is the text the page shows after it; and the seed set is the one it used
        pressed = s.drawn[classroom.GENERATED]
        results = [g for g in s.generated.values() if "tokens" in g]
        assert len(results) == 2, s.generated
        for g in results:
            assert g["tokens"] == g["points"] == TOKENS
            assert g["stopped by"] == "the length limit"
            assert g["streamed"] and g["shown"].startswith(g["streamed"]), g
            assert len(g["shown"].split()) == TOKENS  # the synthetic corpus has word-level tokens
        assert any(f", seed {s.seed} " in md.body for _, md in pressed.of_kind("markdown"))


def test_a_page_that_is_not_there_is_an_error_not_a_hang(server: classroom.Server) -> None:
    async def lost() -> classroom.ProtocolSession:
        s = classroom.ProtocolSession(server.url, timeout=60)
        try:
            await s.connect("")
            with pytest.raises(classroom.ProtocolError, match="no page 'Nowhere'"):
                await s.open("Nowhere")
            with pytest.raises(classroom.ProtocolError, match="0 widgets labelled 'seed'"):
                await s.set({"seed": 3}, "seed on the Start page")
        finally:
            await s.close()
        return s

    assert asyncio.run(lost()).problems == []
