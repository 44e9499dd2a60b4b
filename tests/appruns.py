"""A runs folder for the app tests (AppTest and the real browser): tiny runs trained here on the
synthetic corpus in a few seconds, plus every kind of broken or odd run directory the app must
survive. Built once per test session and shared (`runs_root`). And the helpers that run the app
in Streamlit's AppTest and read what a page shows (charts, tables, frames)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from labkit.data import DataConfig
from labkit.data.lm import load_lm_data
from labkit.models import RNNConfig, TransformerConfig
from labkit.recorder import TimelineRecorder
from labkit.runs import RunDir
from labkit.train import TrainConfig
from labkit.train.finetune import FinetuneConfig, finetune
from labkit.train.pretrain import pretrain

LSTM, TRANSFORMER = "tiny-lstm", "tiny-transformer"
LIVE, STALE = "live-transformer", "stale-lstm"
CLASSIFIER = "number-lstm"  # the tiny LSTM fine-tuned on the synthetic number task
SCRATCH = "number-lstm-scratch"  # the same network trained on it from random weights
CLASSIFIER_TF = "number-transformer"  # the tiny Transformer fine-tuned on it (attention before / after)
BOW = "number-bow"  # the bag-of-words yardstick on the same task
CONTEXT = 64

_built: dict[str, Path] = {}


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def build(root: Path) -> Path:
    """Train the tiny runs into `root` and add the odd ones; a few seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only adds waiting on a busy machine
    try:
        return _build(root)
    finally:
        torch.set_num_threads(threads)


def language_models(root: Path) -> None:
    """The two tiny language models alone (LSTM and TRANSFORMER in `root`), each with its timeline."""
    root.mkdir(parents=True, exist_ok=True)
    data_config = DataConfig(corpus="synthetic", train_tokens=20_000, eval_tokens=2_000)
    data = load_lm_data(data_config)
    vocab = data.tokenizer.vocab_size
    # Rates high enough that 16 steps take both models below the unigram level (labkit.inspect.quality):
    # the pages show no "has not learned" warning for them.
    train = TrainConfig(max_steps=16, batch_size=8, seq_len=32, eval_every=8, log_every=2, lr=2e-2,
                        warmup_steps=2, device="cpu", seed=1)
    # Each records its timeline (one snapshot per evaluation), as `labkit pretrain` does.
    pretrain(RNNConfig(vocab_size=vocab, d_embed=32, d_hidden=32, n_layers=1, dropout=0.0, tie_weights=True),
             train.replace(lr=4e-2), data_config, root / LSTM, data=data, callbacks=[TimelineRecorder()])
    pretrain(TransformerConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, d_ff=64,
                               context_length=CONTEXT, dropout=0.0),
             train.replace(lr=1e-2), data_config, root / TRANSFORMER, data=data, callbacks=[TimelineRecorder()])


def _build(root: Path) -> Path:
    language_models(root)
    tune = FinetuneConfig(task="number", max_steps=24, lm_steps=0, eval_every=8, val_size=50, batch_size=16,
                          lr_head=1e-2, lr_body=5e-3, device="cpu")
    finetune(root / LSTM, tune, root / CLASSIFIER)
    finetune(root / LSTM, tune.replace(from_scratch=True), root / SCRATCH)
    finetune(root / TRANSFORMER, tune.replace(lr_body=3e-2), root / CLASSIFIER_TF)  # a high rate: heads that move
    finetune(root / LSTM, tune.replace(baseline="bow"), root / BOW)

    # A run still training (its card says running and its process, this one, is alive) ...
    shutil.copytree(root / TRANSFORMER, root / LIVE)
    live = RunDir(root / LIVE)
    live.write_card(live.read_card() | {"status": "running", "pid": os.getpid()})
    # ... and one whose process was killed without a chance to say so.
    shutil.copytree(root / LSTM, root / STALE)
    stale = RunDir(root / STALE)
    stale.write_card(stale.read_card() | {"status": "running", "pid": dead_pid()})

    # Broken directories: each must get a message, and the rest of the app must keep working.
    (root / "corrupt-config").mkdir()
    (root / "corrupt-config" / "config.json").write_text('{"kind": "lm", "model": {', encoding="utf-8")
    future = RunDir(root / "future-version")
    future.root.mkdir()
    future.write_json(future.config_path, {"format_version": 99, "kind": "lm"})
    (root / "not-a-run").mkdir()
    (root / "not-a-run" / "notes.txt").write_text("hello", encoding="utf-8")
    half = RunDir(root / "half-written")  # config written, then the process died
    half.root.mkdir()
    half.save_config(json.loads((root / LSTM / "config.json").read_text()) | {"format_version": 1})
    (root / "half-written" / "metrics.jsonl").write_text('{"step": 2, "loss": 4.0, "tokens": 10, "elap',
                                                          encoding="utf-8")

    # Fine-tuning runs as another engineer's code writes them: read from the card alone.
    for name, size, acc, matrix in (("sst2-small", 100, 0.62, [[250, 178], [153, 291]]),
                                    ("sst2-large", 6000, 0.81, [[340, 88], [78, 366]])):
        run = RunDir(root / name)
        run.root.mkdir()
        run.save_config({"kind": "classifier", "model": {"family": "classifier", "n_classes": 2,
                                                         "body": {"family": "rnn", "cell": "lstm"}},
                         "labels": ["negative", "positive"], "base_run": str(root / LSTM)})
        run.write_card({"status": "finished", "accuracy": acc, "train_size": size, "val_accuracy": acc + 0.01,
                        "confusion_matrix": matrix, "labels": ["negative", "positive"],
                        "precision": {"negative": matrix[0][0] / (matrix[0][0] + matrix[1][0]),
                                      "positive": matrix[1][1] / (matrix[0][1] + matrix[1][1])},
                        "recall": {"negative": matrix[0][0] / sum(matrix[0]),
                                   "positive": matrix[1][1] / sum(matrix[1])},
                        "steps": 40, "wall_time_s": 3.5})
        (run.root / "model.safetensors").write_bytes(b"not really weights")
        (run.root / "metrics.jsonl").write_text("".join(
            json.dumps({"step": step, "val_loss": 0.7, "val_accuracy": acc - 0.1 + step / 400}) + "\n"
            for step in (10, 20, 30, 40)), encoding="utf-8")
    return root


def runs_root(tmp_path_factory) -> Path:
    """The shared runs folder (built on first use in this session)."""
    if "root" not in _built:
        _built["root"] = build(tmp_path_factory.mktemp("app-runs") / "runs")
    return _built["root"]


# --- reading what a page shows (AppTest) ------------------------------------------------------
APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")


def app(root: Path | None = None, page: str | None = None, **state):
    """The app run once by Streamlit's AppTest (on `page`, with `state` in the session first)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    if root is not None:
        at.session_state["runs_root"] = str(root)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


def tab(at, key: str, label: str):
    """Open the tab `label` of the page's tabs `key` (only the open tab is computed)."""
    at.session_state[key] = label
    at.run()
    assert not at.exception, at.exception
    return at


def charts(at) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def chart_configs(at) -> list[dict]:
    return [json.loads(e.proto.config) for e in at.get("plotly_chart")]


def traces(fig: dict) -> dict[str, dict]:
    return {t.get("name"): t for t in fig["data"]}


def array(value) -> np.ndarray:
    """A figure's data array: plotly sends numpy arrays as typed-array dicts."""
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return data.reshape([int(n) for n in str(value.get("shape", len(data))).split(",")])
    return np.asarray(value, dtype=float)


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def iframes(at) -> list[str]:
    return [e.proto.srcdoc for e in at.get("iframe")]


def shown_table(element):
    """A table as the page displays it (its formatted cells, blank where a value is missing)."""
    import pyarrow as pa

    styler = element.proto.arrow_data.styler
    return pa.ipc.open_stream(styler.display_values).read_pandas()
