"""One set of weights, many sessions (app/common.py): the server loads a run's weights once, and each
script run gets its own module tree over them (labkit.models.own_modules), so hooks that one session
puts on its model (the Attention page reads each head's pattern through hooks) never fire in
another session's forward pass, and no session waits for another's page.

Two real sessions (Streamlit's AppTest, each script run in its own thread, one process, so one
cache) on the same run: session A opens the Attention page and, right after its forward pass with
its hooks on, is held there (a forward hook that only waits); meanwhile session B presses
Generate. B's page finishes while A is still held (no lock between sessions), none of B's forward
passes runs with A's hooks, and both pages show what each shows alone."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP_DIR = Path(__file__).resolve().parents[2] / "app"
HOLD_S = 5.0  # at most six times this, A waits after its forward pass for B to finish


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from labkit.data import DataConfig
    from labkit.models import TransformerConfig
    from labkit.train import TrainConfig
    from labkit.train.pretrain import pretrain

    root = tmp_path_factory.mktemp("shared-model") / "runs"
    pretrain(TransformerConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64, context_length=64, dropout=0.0),
             TrainConfig(max_steps=4, eval_every=2, log_every=1, batch_size=4, seq_len=16, device="cpu"),
             DataConfig(corpus="synthetic", train_tokens=4000, eval_tokens=300), root / "tf")
    return root


def session(root: Path, page: str) -> AppTest:
    at = AppTest.from_file(str(APP_DIR / "main.py"), default_timeout=60)
    at.session_state["runs_root"] = str(root)
    at.run()
    assert not at.exception, at.exception
    return at.switch_page(f"views/{page}.py")


def head_view(at: AppTest) -> str:
    assert not at.exception, at.exception
    views = [e.proto.srcdoc for e in at.get("iframe")]
    assert len(views) == 1 and "attention" in views[0], views
    return re.sub(r"bertviz-[0-9a-f]{32}", "bertviz-ID", views[0])  # the frame's element id is drawn at random


def generated(at: AppTest) -> list[str]:
    assert not at.exception, at.exception
    shown = [m.value for m in at.markdown]
    assert any("▌" not in text and len(text) > 10 for text in shown[1:]), shown
    return shown


def keep_runtime(monkeypatch) -> None:
    """AppTest drives one session at a time: it unsets Streamlit's global runtime when a script run
    ends, which would break another session's run still going. Keep the last one for it."""
    from streamlit.runtime import Runtime

    last: list[Runtime] = []

    def instance(cls) -> Runtime:
        if cls._instance is not None:
            last[:] = [cls._instance]
        elif not last:
            raise RuntimeError("Runtime hasn't been created!")
        return cls._instance or last[0]

    monkeypatch.setattr(Runtime, "instance", classmethod(instance))


def test_sessions_run_at_once_and_hooks_stay_with_their_session(root: Path, common, monkeypatch) -> None:
    from labkit.models.hooks import hook_points
    from labkit.runs import read_info

    monkeypatch.delenv("LABKIT_RUNS", raising=False)
    keep_runtime(monkeypatch)
    shared = common._load(str(root / "tf"), common.stamp(read_info(root / "tf"))).model  # the weights' owner
    held, b_done = threading.Event(), threading.Event()
    seen: dict[str, object] = {"armed": False, "a": None, "under_hooks": 0, "b_done_while_a_held": None}

    def watch(module, args, output) -> None:
        """After each forward pass of a session's model (each copy carries this hook of the shared
        one): A's first pass with its hooks on is held until B is done."""
        hooked = any(p._forward_hooks for p in hook_points(module).values())
        me = threading.get_ident()
        if hooked and seen["armed"] and seen["a"] is None:
            seen["a"] = me
            held.set()
            seen["b_done_while_a_held"] = b_done.wait(HOLD_S * 6)
        elif hooked and seen["a"] is not None and me != seen["a"]:
            seen["under_hooks"] += 1  # another session's forward pass with hooks on its model

    handle = shared.register_forward_hook(watch)
    try:
        alone_a = head_view(session(root, "attention").run())
        b = session(root, "generate").run()
        alone_b = generated(b.button(key="gen_go").click().run())

        a, b = session(root, "attention"), session(root, "generate").run()
        common._analysis.clear()  # A's attention computed again, not read from the shared cache
        from panels.gate import GATE
        monkeypatch.setattr(GATE, "slots", 2)  # two computations at once (the gate's own test is test_gate.py)
        seen["armed"] = True
        ran: dict[str, AppTest] = {}

        def run_b() -> None:
            try:
                ran["b"] = b.button(key="gen_go").click().run()
            finally:
                b_done.set()

        thread_a = threading.Thread(target=lambda: ran.setdefault("a", a.run()))
        thread_a.start()
        assert held.wait(60), "session A's forward pass never ran with its hooks on"
        thread_b = threading.Thread(target=run_b)
        thread_b.start()
        thread_a.join(90)
        thread_b.join(90)
    finally:
        handle.remove()
    assert seen["b_done_while_a_held"] is True, "session B waited for session A's page"
    assert seen["under_hooks"] == 0, f"{seen['under_hooks']} forward passes of session B ran with hooks on"
    assert head_view(ran["a"]) == alone_a
    assert generated(ran["b"]) == alone_b
