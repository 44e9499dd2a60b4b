"""labkit.inspect: smoothing, curves, run status, config differences, attention capture and
statistics, offline bertviz HTML, classifier cards. Unit tests: tiny models, no data."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from labkit.data import WordTokenizer
from labkit.errors import LabkitError
from labkit.inspect import classifier as clf
from labkit.inspect.attention import (
    AttentionCapture,
    EmptyInput,
    capture_attention,
    clean_text,
    head_stats,
    long_attention,
    sink_heads,
    uniform_entropy,
)
from labkit.inspect.bertviz_offline import head_view_html, make_offline, model_view_html
from labkit.inspect.curves import ema, load_curves, run_curves
from labkit.inspect.plots import attention_grid_figure, loss_figure, token_probability_figure
from labkit.inspect.run_tables import config_diff, drop_empty_columns, flatten, summary_row
from labkit.models import RNNConfig, TransformerConfig, build_model, run_with_cache
from labkit.models.transformer import causal_mask
from labkit.runs import STALE, RunInfo, pid_alive, run_kind, run_status


# --- smoothing and curves -------------------------------------------------------------------
def tensorboard_smoothing(values, weight):
    """TensorBoard's own code (vz_line_chart2 resmoothDataset), transcribed line by line."""
    last = 0 if values else math.nan
    num_accum = 0
    out = []
    is_constant = all(v == values[0] for v in values)
    for v in values:
        if is_constant or not math.isfinite(v):
            out.append(v)
        else:
            last = last * weight + (1 - weight) * v
            num_accum += 1
            debias = 1 - weight ** num_accum if weight != 1 else 1
            out.append(last / debias)
    return out


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.6, 0.9, 0.99])
def test_ema_matches_tensorboard(weight):
    values = [5.0, 4.0, 4.5, 3.0, float("nan"), 2.5, 2.0, 2.2, float("inf"), 1.9]
    ours, theirs = ema(values, weight), tensorboard_smoothing(values, weight)
    assert np.allclose(np.array(ours, dtype=float), np.array(theirs, dtype=float), equal_nan=True)


def test_ema_is_debiased_identity_at_zero_and_keeps_constants():
    assert ema([3.0, 1.0], 0.9)[0] == pytest.approx(3.0)  # not 0.3: the start is de-biased
    assert ema([3.0, 1.0, 2.0], 0.0) == [3.0, 1.0, 2.0]
    assert ema([2.0, 2.0, 2.0], 0.9) == [2.0, 2.0, 2.0]
    assert ema([], 0.5) == []
    assert ema([None, 1.0], 0.5) == [None, 1.0]
    with pytest.raises(ValueError):
        ema([1.0], 1.0)


RECORDS = [
    {"step": 1, "tokens": 64, "elapsed_s": 0.1, "loss": 5.0, "ppl": math.exp(5.0)},
    {"step": 2, "tokens": 128, "elapsed_s": 0.2, "loss": 4.0, "ppl": math.exp(4.0)},
    {"step": 2, "tokens": 128, "elapsed_s": 0.2, "val_loss": 4.5, "val_ppl": math.exp(4.5)},
    {"step": 3, "tokens": 192, "elapsed_s": 0.3, "loss": None, "ppl": None},  # a NaN loss, logged as null
    {"step": 3, "tokens": 192, "test_loss": 4.4, "test_ppl": 81.0},
]


def test_run_curves_split_train_and_validation_on_any_x_axis():
    c = run_curves(RECORDS, "step", "loss")
    assert c.train.x == [1, 2, 3] and c.train.y[:2] == [5.0, 4.0] and math.isnan(c.train.y[2])
    assert (c.val.x, c.val.y) == ([2], [4.5])
    c = run_curves(RECORDS, "tokens seen", "perplexity")
    assert c.train.x == [64, 128, 192] and c.val.y == [pytest.approx(math.exp(4.5))]
    assert run_curves(RECORDS, "training time (s)").train.x == [0.1, 0.2, 0.3]


def test_load_curves_tolerates_missing_and_torn_files(tmp_path):
    assert load_curves(tmp_path / "nothing").train.x == []
    (tmp_path / "metrics.jsonl").write_text(json.dumps(RECORDS[0]) + "\n" + '{"step": 2, "lo')
    assert load_curves(tmp_path).train.x == [1]


def test_loss_figure_draws_faint_raw_smoothed_and_validation_traces():
    fig = loss_figure({"a": run_curves(RECORDS)}, smoothing=0.5, log_y=True)
    names = [t.name for t in fig.data]
    assert names == ["a (raw)", "a", "a val"]
    assert fig.layout.yaxis.type == "log"
    assert "rgba" in fig.data[0].line.color  # the raw curve is faint
    assert [t.name for t in loss_figure({"a": run_curves(RECORDS)}, smoothing=0.0).data] == ["a", "a val"]


# --- run status and config differences ------------------------------------------------------
def info(card=None, config=None, error=None, name="r"):
    from pathlib import Path

    return RunInfo(Path("/runs") / name, config if config is not None else {"kind": "lm"}, card, error)


def test_run_status_needs_a_live_process_for_running():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert run_status(info({"status": "running", "pid": os.getpid()})) == "running"
    assert run_status(info({"status": "running", "pid": proc.pid})) == STALE
    assert run_status(info({"status": "running"})) == STALE
    assert run_status(info({"status": "finished", "pid": proc.pid})) == "finished"
    assert run_status(info(None)) == "incomplete"
    assert run_status(info(None, None, "broken")) == "unreadable"


def test_a_finished_child_that_was_not_reaped_is_not_alive():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(200):  # until it has exited (it stays a zombie: nobody waits for it yet)
        if sys.platform.startswith("linux") and open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
            break
        import time

        time.sleep(0.05)
    assert not pid_alive(proc.pid)
    proc.wait()
    assert not pid_alive(proc.pid) and not pid_alive(None) and not pid_alive("12") and not pid_alive(True)
    assert pid_alive(os.getpid())


def test_kind_and_summary_row():
    assert run_kind(info(config={})) == "lm"  # older runs have no kind
    assert run_kind(info(config={"kind": "classifier"})) == "classifier"
    row = summary_row(info({"status": "finished", "test_ppl": 12.5, "train_flops": 3e12, "mfu": 0.25},
                           {"kind": "lm", "model": {"family": "rnn", "cell": "gru"}}))
    assert row["model"] == "gru" and row["test ppl"] == 12.5 and row["problem"] == ""
    assert row["training FLOPs"] == 3e12 and row["MFU"] == 0.25
    assert drop_empty_columns([{"a": 1, "b": None, "c": ""}, {"a": None, "b": None, "c": "x"}]) == \
        [{"a": 1, "c": ""}, {"a": None, "c": "x"}]


def test_config_diff_keeps_only_fields_that_differ():
    a = {"model": {"family": "rnn", "d": 64, "cell": "lstm"}, "train": {"lr": 0.001, "steps": 10}, "tags": [1, 2]}
    b = {"model": {"family": "transformer", "d": 64, "heads": 4}, "train": {"lr": 0.001, "steps": 20}, "tags": [1, 2]}
    rows = {r["field"]: r for r in config_diff({"a": a, "b": b})}
    assert set(rows) == {"model.family", "model.cell", "model.heads", "train.steps"}
    assert rows["model.cell"] == {"field": "model.cell", "a": "lstm", "b": "(absent)"}
    assert rows["train.steps"]["b"] == "20"
    assert config_diff({"a": a}) == []
    assert config_diff({"a": {"x": 1}, "b": {"x": 1.0}}) == []  # the same number
    assert [r["field"] for r in config_diff({"a": {"x": 1}, "b": {"x": True}})] == ["x"]
    assert [r["field"] for r in config_diff({"a": {"x": None}, "b": {}})] == ["x"]
    assert flatten({"a": {"b": {"c": 1}}, "d": {}}) == {"a.b.c": 1, "d": {}}


# --- attention ------------------------------------------------------------------------------
def tiny_transformer(context=16):
    torch.manual_seed(0)
    lines = ["the cat sat on the mat", "a dog ran to the park", "the bird sang"]
    tok = WordTokenizer.train(lines, specials=("<unk>", "<eos>"))
    model = build_model(TransformerConfig(vocab_size=tok.vocab_size, d_model=16, n_layers=2, n_heads=2,
                                          d_ff=32, context_length=context, dropout=0.0))
    return model, tok


def test_capture_attention_gives_causal_rows_that_sum_to_one():
    model, tok = tiny_transformer()
    cap = capture_attention(model, tok, "the cat sat on the mat")
    assert cap.tokens == ["the", "cat", "sat", "on", "the", "mat"] and cap.total_tokens == 6
    assert cap.attention.shape == (2, 2, 6, 6) and cap.attention.dtype == np.float32
    assert np.allclose(cap.attention.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(cap.attention, k=1) == 0)
    assert not cap.notices and model.training  # train mode restored
    # the same numbers as the plain model's own attention, softmax(q k^T / sqrt(hs) + M), by hand
    x = torch.tensor([cap.ids])
    with torch.no_grad():
        block = model.eval().blocks[1]
        _, cache = run_with_cache(model, x, names="blocks.0.hook_resid_post")
        q, k, _ = block.attn.qkv(block.ln1(cache["blocks.0.hook_resid_post"])).split(16, dim=2)  # (1, T, C)
        q, k = (t.view(1, 6, 2, 8).transpose(1, 2) for t in (q, k))  # (1, heads, T, hs)
        scores = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~causal_mask(6, 6), float("-inf"))
    assert np.allclose(cap.attention[1], scores.softmax(-1)[0].numpy(), atol=1e-6)


def test_capture_attention_caps_long_input_and_refuses_empty_or_rnn():
    model, tok = tiny_transformer(context=16)
    cap = capture_attention(model, tok, "the cat " * 5_000, max_tokens=64)
    assert len(cap.tokens) == 16 and cap.total_tokens == 10_000
    assert "10,000 tokens; showing the first 16 (the model's context length)" in cap.notices[0]
    cap = capture_attention(model, tok, "the cat " * 20, max_tokens=8)
    assert len(cap.tokens) == 8 and "bertviz" in cap.notices[0]
    for empty in ("", "   ", "\n"):
        with pytest.raises(EmptyInput):
            capture_attention(model, tok, empty)
    rnn = build_model(RNNConfig(vocab_size=tok.vocab_size, d_embed=8, d_hidden=8, n_layers=1, dropout=0.0))
    with pytest.raises(LabkitError, match="Transformer"):
        capture_attention(rnn, tok, "the cat")


def test_clean_text_makes_any_string_encodable():
    odd = "a\ud800b\x00c 🤖 \u202e"
    cleaned = clean_text(odd)
    cleaned.encode("utf-8")
    assert "\x00" not in cleaned and cleaned.endswith("🤖 \u202e") and clean_text(None) == ""
    model, tok = tiny_transformer()
    assert capture_attention(model, tok, odd).tokens == ["<unk>"] * 3


def one_hot_heads(T=5):
    """Layer 0: head 0 looks at itself, head 1 at the first token; layer 1: uniform heads."""
    att = np.zeros((2, 2, T, T), dtype=np.float32)
    for t in range(T):
        att[0, 0, t, t] = 1.0
        att[0, 1, t, 0] = 1.0
        att[1, :, t, : t + 1] = 1.0 / (t + 1)
    return att


def test_head_stats_on_known_patterns():
    stats = {(r["layer"], r["head"]): r for r in head_stats(one_hot_heads(5))}
    self_head, first_head, uniform = stats[0, 0], stats[0, 1], stats[1, 0]
    assert self_head["entropy"] == pytest.approx(0.0) and self_head["mean_distance"] == 0.0
    assert self_head["first_token_share"] == 0.0
    assert first_head["first_token_share"] == pytest.approx(1.0)
    assert first_head["mean_distance"] == pytest.approx(np.mean([1, 2, 3, 4]))
    assert uniform["entropy"] == pytest.approx(uniform_entropy(5)) and uniform["entropy_ratio"] == pytest.approx(1.0)
    assert uniform["first_token_share"] == pytest.approx(np.mean([1 / 2, 1 / 3, 1 / 4, 1 / 5]))
    assert uniform["mean_distance"] == pytest.approx(np.mean([t / 2 for t in range(1, 5)]))
    assert self_head["previous_token_share"] == 0.0 and first_head["previous_token_share"] == pytest.approx(0.25)
    assert uniform["previous_token_share"] == pytest.approx(np.mean([1 / 2, 1 / 3, 1 / 4, 1 / 5]))
    assert sink_heads(list(stats.values())) == [(0, 1)]
    one = head_stats(one_hot_heads(1))  # a single token: nothing to choose
    assert one[0]["entropy"] == 0.0 and one[0]["first_token_share"] == 1.0


def test_attention_grid_draws_each_head_and_its_causal_mask():
    fig = attention_grid_figure(one_hot_heads(4), ["a", "b", "c", "d"])
    assert len(fig.data) == 8
    mask = np.asarray(fig.data[1].z, dtype=float)
    assert np.isnan(mask[1, 0]) and mask[0, 1] == 1.0
    head = np.asarray(fig.data[0].z, dtype=float)
    assert head[2, 2] == 1.0 and np.isnan(head[0, 3])


# --- offline bertviz --------------------------------------------------------------------------
def capture_of(tokens):
    T = len(tokens)
    att = one_hot_heads(T)
    return AttentionCapture(list(tokens), list(range(T)), att, T)


# --- attention on long inputs ------------------------------------------------------------------
def window_attention(model, ids, begin, end, layer, head=None):
    """(end - begin, end - begin): the layer's attention on ids[begin:end] read alone, as the model computes it."""
    with torch.no_grad():
        _, cache = run_with_cache(model.eval(), torch.tensor([ids[begin:end]]), names=f"blocks.{layer}.attn.hook_pattern")
    a = cache[f"blocks.{layer}.attn.hook_pattern"][0].numpy()  # (heads, T, T)
    return a.mean(0) if head is None else a[head]


@pytest.mark.parametrize("head", [None, 1])
def test_long_attention_pools_what_each_context_window_computes(head):
    model, tok = tiny_transformer(context=8)
    text = " ".join("the cat sat on the mat a dog ran to the park".split() * 3)
    ids = tok.encode(text)
    T = len(ids)
    assert T == 36
    # by hand: queries 0..7 read in the window [0, 8); query t >= 8 in the window of 8 tokens that
    # ends at the next multiple of 4 after t (windows move by half a context)
    expected = np.zeros((T, T))
    expected[:8, :8] = window_attention(model, ids, 0, 8, 1, head)
    for t in range(8, T):
        begin = 4 * (t // 4) - 4
        expected[t, begin:begin + 8] = window_attention(model, ids, begin, begin + 8, 1, head)[t - begin]
    full = long_attention(model, tok, text, cells=64, layer=1, head=head)
    assert full.matrix.shape == (T, T) and full.edges == list(range(T + 1)) and full.head == ("mean" if head is None else 1)
    np.testing.assert_allclose(full.matrix, expected, atol=1e-6)
    assert "windows of 8 tokens" in full.notices[0] and full.tokens == tok.id_to_token(ids)
    pooled = long_attention(model, tok, text, cells=9, layer=-1, head=head)  # blocks of 4 tokens
    assert pooled.edges == list(range(0, 37, 4)) and pooled.layer == 1
    by_hand = expected.reshape(9, 4, 9, 4).sum(3).mean(1)  # a block's queries: mean of their mass on each key block
    np.testing.assert_allclose(pooled.matrix, by_hand, atol=1e-6)
    np.testing.assert_allclose(pooled.matrix.sum(1), 1.0, atol=1e-5)
    uneven = long_attention(model, tok, text, cells=8, layer=1, head=head)  # blocks of 4 or 5 tokens
    e = uneven.edges
    assert e == [0, 4, 9, 14, 18, 22, 27, 32, 36]
    by_hand = [[expected[e[i]:e[i + 1], e[j]:e[j + 1]].sum() / (e[i + 1] - e[i]) for j in range(8)] for i in range(8)]
    np.testing.assert_allclose(uneven.matrix, by_hand, atol=1e-6)


def test_long_attention_cuts_refuses_and_draws_a_thousand_tokens(capsys):
    import time

    from labkit.inspect.inside_plots import long_attention_figure
    from labkit.presets import PRESETS

    model, tok = tiny_transformer(context=8)
    cut = long_attention(model, tok, "the cat " * 600, max_tokens=100, cells=10)
    assert len(cut.tokens) == 100 and cut.matrix.shape == (10, 10) and "1,200 tokens; showing the first 100" in cut.notices[0]
    with pytest.raises(EmptyInput):
        long_attention(model, tok, "  ")
    with pytest.raises(LabkitError, match="layer 2 does not exist"):
        long_attention(model, tok, "the cat", layer=2)
    with pytest.raises(LabkitError, match="head 5 does not exist"):
        long_attention(model, tok, "the cat", head=5)
    rnn = build_model(RNNConfig(vocab_size=tok.vocab_size, d_embed=8, d_hidden=8, n_layers=1, dropout=0.0))
    with pytest.raises(LabkitError, match="Transformer"):
        long_attention(rnn, tok, "the cat")
    # the largest preset a CPU trains (7 layers, a 256-token context) on 1,024 tokens, drawn: timed, printed
    torch.manual_seed(0)
    big = build_model(TransformerConfig(**{**PRESETS["classic-transformer"]["model"], "vocab_size": tok.vocab_size}))
    start = time.perf_counter()
    long = long_attention(big, tok, "the cat sat on the mat " * 200, cells=256)
    figure = long_attention_figure(long).to_json()
    took = time.perf_counter() - start
    assert len(long.tokens) == 1024 and long.matrix.shape == (256, 256) and len(figure) < 2_000_000
    with capsys.disabled():
        print(f"\nlong_attention: 1,024 tokens, classic-transformer, pooled to 256 x 256 and drawn in {took:.2f} s "
              f"(load average {os.getloadavg()[0]:.2f})")


def test_bertviz_html_is_self_contained():
    for html in (head_view_html(capture_of(["the", "cat", "sat"])), model_view_html(capture_of(["the", "cat"]))):
        assert html.startswith("<!DOCTYPE html>")
        assert "https://cdnjs" not in html and "require.min.js" not in html and "sourceMappingURL" not in html
        assert not re.search(r"<script[^>]*\bsrc=", html)  # inline scripts only
        assert html.count("</script>") == 5  # d3, jQuery, the AMD shim, bertviz, the export buttons
        assert "labkitSaveSvg('labkit-" in html and "labkitSavePng('labkit-" in html and "canvas.toBlob" in html
        assert "<!--" not in html  # would let a "<script" inside jQuery's source open a tag
        assert "d3js.org v5.7.0" in html and "jQuery v3" in html
        assert "requirejs(['jquery', 'd3']" in html


def test_bertviz_html_cannot_be_broken_out_of_by_a_token():
    html = head_view_html(capture_of(["</script><script>alert(1)</script>", "<!--", "ok"]))
    assert html.count("</script>") == 5  # only the five real ends
    assert "<\\/script><script>alert(1)<\\/script>" in html
    assert "<!--" not in html.split("<script>")[-1]


def test_make_offline_rejects_unexpected_html():
    with pytest.raises(LabkitError, match="bertviz"):
        make_offline("<div>no scripts</div>")


# --- generation and classifier views ---------------------------------------------------------
def test_token_probability_figure():
    from labkit.generate import GeneratedToken

    tokens = [GeneratedToken(1, "the", 0.5, 2.0, 0.4), GeneratedToken(2, "cat", 1.0, 0.1, 0.9)]
    fig = token_probability_figure(tokens)
    assert [t.name for t in fig.data] == ["p (model)", "p (sampling)", "entropy (nats)"]
    assert list(fig.data[0].y) == [0.4, 0.9] and list(fig.data[0].text) == ["the", "cat"]
    assert list(fig.data[2].y) == [2.0, 0.1]


def test_classifier_views_read_cards_generically(tmp_path):
    card = {"status": "finished", "accuracy": 0.8, "train_size": 50, "confusion_matrix": [[3, 1], [1, 5]],
            "precision": [0.75, 0.83], "recall": {"neg": 0.75, "pos": 0.83}, "labels": ["neg", "pos"]}
    run = info(card, {"kind": "classifier", "base_run": "/x/runs/lstm-1"})
    assert clf.labels_of(run) == ["neg", "pos"]
    assert clf.confusion_matrix(run) == [[3, 1], [1, 5]]
    assert clf.per_class(run) == [{"label": "neg", "precision": 0.75, "recall": 0.75},
                                  {"label": "pos", "precision": 0.83, "recall": 0.83}]
    s = clf.summary(run)
    assert s["accuracy"] == 0.8 and s["train_size"] == 50 and s["base run"] == "lstm-1"
    odd = info({"confusion_matrix": [[1, 2]], "accuracy": "high"}, {"kind": "classifier"})
    assert clf.confusion_matrix(odd) is None and clf.summary(odd)["accuracy"] is None
    assert clf.labels_of(odd) == [] and clf.per_class(odd) == []
    (tmp_path / "metrics.jsonl").write_text('{"step": 5, "val_accuracy": 0.7}\n{"step": 6, "loss": 1}\n')
    assert clf.accuracy_curve(tmp_path) == ([5.0], [0.7])


def test_fine_tuning_summaries_name_the_condition_for_the_learning_curve():
    cards = [({"mode": "full", "from_scratch": False}, "pretrained, full", False),
             ({"mode": "frozen", "from_scratch": False}, "pretrained, frozen", False),
             ({"mode": "gradual", "from_scratch": False}, "pretrained, gradual", False),
             ({"mode": "full", "from_scratch": True}, "scratch", True),  # was shown as "mode: full"
             ({"mode": "frozen", "from_scratch": True}, "scratch, frozen", True)]
    for card, condition, scratch in cards:
        row = clf.summary(info({**card, "accuracy": 0.7, "train_size": 10}, {"kind": "classifier"}))
        assert (row["condition"], row["from_scratch"]) == (condition, scratch)
    # a card written before it recorded from_scratch: the config's fine-tuning settings say it
    old = clf.summary(info({"mode": "full"}, {"kind": "classifier", "finetune": {"from_scratch": True, "mode": "full"}}))
    assert (old["condition"], old["from_scratch"]) == ("scratch", True)
    assert clf.summary(info({}, {"kind": "classifier"}))["condition"] == "pretrained, full"
