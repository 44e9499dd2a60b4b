"""The app's pages, run by Streamlit's own test harness (no browser, no JavaScript) on run
directories made here: tiny runs trained on the synthetic corpus plus broken ones (appruns.py).
Each test checks what a page shows: titles, table rows, chart traces, generated text.
(The views added on top of these, surgery, the logit lens and so on: test_app_views.py.)"""

from __future__ import annotations

import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from labkit.generate import SamplingConfig, generate
from labkit.runs import RunDir, load_run, read_metrics

import appruns
from appruns import app, array, charts, iframes, shown_table, tab, texts, traces

pytestmark = pytest.mark.usefixtures("no_runs_env")


# --- Runs ---------------------------------------------------------------------------------
def test_runs_page_lists_runs_and_flags_broken_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = RunDir(tmp_path / "runs" / "lstm-a")
    good.save_config({"kind": "lm", "model": {"family": "rnn", "cell": "lstm"}})
    good.write_card({"status": "finished", "steps": 10, "test_ppl": 123.4, "parameters": 99,
                     "updated_at": time.mktime((2025, 3, 4, 5, 6, 0, 0, 0, -1))})
    (tmp_path / "runs" / "junk").mkdir()
    at = app(page="runs")
    assert at.title[0].value == "labkit runs"
    table = at.dataframe[0].value
    assert list(table["run"]) == ["junk", "lstm-a"]
    assert table.set_index("run").loc["lstm-a", "test ppl"] == 123.4
    assert "labkit run directory" in table.set_index("run").loc["junk", "problem"]
    # As shown: blank where a value does not apply, numbers formatted, the card's time as a date.
    shown = shown_table(at.dataframe[0]).set_index("run")
    assert shown.loc["junk", "test ppl"] == "" and shown.loc["lstm-a", "test ppl"] == "123.40"
    assert shown.loc["lstm-a", "updated"] == "2025-03-04 05:06"
    assert "None" not in shown.to_string() and "nan" not in shown.to_string()


def test_runs_page_explains_what_to_do_with_no_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    at = app(page="runs")
    assert "labkit pretrain" in at.info[0].value
    assert at.button(key="train_demo").label == "Train demo models"


def test_runs_page_shows_status_problems_and_only_differing_config_fields(root):
    at = app(root, "runs")
    table = at.dataframe[0].value.set_index("run")
    assert table.loc[appruns.LSTM, "status"] == "finished"
    assert table.loc[appruns.LIVE, "status"] == "running"  # card says running, this process lives
    assert table.loc[appruns.STALE, "status"] == "interrupted (stale)"
    assert table.loc["half-written", "status"] == "incomplete"
    assert table.loc["sst2-large", "kind"] == "classifier"
    assert table.loc["sst2-large", "status"] == "weights unreadable"  # its card says finished
    for name in ("corrupt-config", "future-version", "not-a-run"):
        assert table.loc[name, "status"] == "unreadable"
    warnings = texts(at.warning)
    assert "corrupt-config**: " in warnings and "is corrupt" in warnings
    assert "run format 99" in warnings and "no config.json" in warnings
    assert f"{appruns.STALE}**: its card says running" in warnings and "--resume" in warnings
    assert "half-written**: has a config but no results card" in warnings
    assert "sst2-large**: its card says finished, but its weights file cannot be read" in warnings

    at.multiselect(key="compare_runs").set_value([appruns.LSTM, appruns.TRANSFORMER]).run()
    diff = at.dataframe[1].value.set_index("field")
    assert {"model.family", "model.n_heads", "model.cell", "train.lr"} <= set(diff.index)
    assert diff.loc["model.family", appruns.LSTM] == "rnn"
    assert diff.loc["model.n_heads", appruns.LSTM] == "(absent)"
    assert "train.batch_size" not in diff.index and "data.corpus" not in diff.index  # the same in both
    # The results follow in the same table (one table, not the run table again).
    card = RunDir(root / appruns.LSTM).read_card()
    assert diff.loc["→ best val ppl", appruns.LSTM] == f"{card['best_val_ppl']:,.2f}"
    assert diff.loc["→ parameters", appruns.LSTM] == f"{card['parameters']:,}"
    assert "→ accuracy" not in diff.index  # no language model has one
    assert sum("status" in d.value.columns for d in at.dataframe) == 1  # the run table is not printed twice


def test_runs_page_says_when_finished_weights_are_damaged(root, tmp_path):
    own = tmp_path / "runs"
    shutil.copytree(root / appruns.LSTM, own / "damaged")
    weights = own / "damaged" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])  # truncated
    at = app(own, "runs")
    assert at.dataframe[0].value.set_index("run").loc["damaged", "status"] == "weights unreadable"
    assert "damaged**: its card says finished, but its weights file cannot be read" in texts(at.warning)
    assert "Status: **weights unreadable**" in texts(at.markdown)


def test_runs_page_details_show_the_card_readably(root):
    at = app(root, "runs")
    at.selectbox(key="detail_run").set_value(appruns.LSTM).run()
    card = RunDir(root / appruns.LSTM).read_card()
    rows = at.dataframe[-1].value.set_index("field")["value"]
    assert rows["updated_at"] == time.strftime("%Y-%m-%d %H:%M", time.localtime(card["updated_at"]))
    assert rows["parameters"] == str(card["parameters"])
    assert rows["best_val_ppl"] == f"{card['best_val_ppl']:,.4g}"


def test_demo_button_trains_two_models_three_classifiers_and_every_page_then_works(tmp_path, monkeypatch):
    import labkit.demo

    # the offline demo as a user without corpora gets it: its own steps, seconds on the synthetic corpus
    monkeypatch.setattr(labkit.demo, "wikitext2_on_disk", lambda: False)
    root = tmp_path / "runs"
    at = app(root, "runs")
    at.button(key="train_demo").click().run()
    assert not at.exception
    shown = "".join(p.proto.text for p in at.get("progress")) + texts(at.success)
    assert "Stage 1 of 5" in shown or "Demo models ready" in shown
    deadline = time.monotonic() + 180
    while (p := labkit.demo.demo_progress(root)) is None or p.active:
        assert time.monotonic() < deadline, "the demo did not finish in 3 minutes"
        time.sleep(0.5)
    assert p.finished and p.fraction == 1.0, p.log_tail
    at.run()
    runs = ["demo-lstm", "demo-transformer", "demo-lstm-number", "demo-transformer-number", "demo-lstm-number-scratch"]
    assert f"Demo models ready (synthetic): {', '.join(runs)}" in texts(at.success)
    table = at.dataframe[0].value.set_index("run")
    assert dict(table["status"]) == dict.fromkeys(runs, "finished")
    planned = {s.run: s.steps for s in labkit.demo.demo_plan(labkit.demo.DEMO_RUNS, "synthetic", "number")}
    assert dict(table["steps"]) == planned and planned["demo-lstm"] == 100 and planned["demo-lstm-number"] == 60
    assert not at.warning  # every demo model learned enough: no quality warning
    at.switch_page("views/attention.py").run()
    assert not at.exception and len(iframes(at)) == 1  # the head view: the open tab
    at.switch_page("views/compare.py").run()  # LSTM against Transformer: every analysis draws
    drawn = 0
    for label in ("saliency vs attention", "surprisal", "loss by position", "word frequency", "agreement by distance"):
        tab(at, "cmp_tab", label)
        assert not at.warning and not at.error, label
        drawn += len(charts(at))
    assert drawn == 6
    at.switch_page("views/finetune.py").run()  # the fine-tuned runs: cards, curves, the chosen one's matrix
    assert not at.exception and not at.info and not at.warning
    assert RunDir(root / "demo-transformer-number").read_card()["base_run"] == str(root / "demo-transformer")
    assert len(charts(at)) == 3
    at.switch_page("views/start.py").run()
    assert texts(at.markdown).count(":material/check_circle:") == 4  # trained, a head, two families, fine-tuned


# --- Loss curves --------------------------------------------------------------------------
def test_curves_page_overlays_runs_with_smoothed_raw_and_validation_traces(root):
    at = app(root, "curves")
    assert at.title[0].value == "Loss curves"
    assert "Live: live-transformer still training" in texts(at.caption)
    assert "No records yet: half-written" in texts(at.caption)
    fig = charts(at)[0]
    t = traces(fig)
    assert {appruns.LSTM, f"{appruns.LSTM} (raw)", f"{appruns.LSTM} val", appruns.TRANSFORMER} <= set(t)
    records = read_metrics(root / appruns.LSTM / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    raw, smooth = t[f"{appruns.LSTM} (raw)"], t[appruns.LSTM]
    assert raw["x"] == [r["step"] for r in train] and raw["y"] == [r["loss"] for r in train]
    assert smooth["y"][0] == pytest.approx(raw["y"][0])  # de-biased: no pull towards 0
    assert smooth["y"] != raw["y"]
    assert t[f"{appruns.LSTM} val"]["y"] == [r["val_loss"] for r in val]
    assert fig["layout"]["xaxis"]["title"]["text"] == "step"
    assert fig["layout"]["yaxis"]["title"]["text"] == "loss (nats/token)"

    at.radio(key="curve_unit").set_value("bits").run()  # the same curves in bits: / ln 2
    t = traces(charts(at)[0])
    assert t[f"{appruns.LSTM} (raw)"]["y"] == pytest.approx([r["loss"] / math.log(2) for r in train])
    assert charts(at)[0]["layout"]["yaxis"]["title"]["text"] == "loss (bits/token)"

    at.radio(key="curve_x").set_value("tokens seen").run()
    at.radio(key="curve_metric").set_value("perplexity").run()
    at.toggle(key="curve_log").set_value(True).run()
    at.slider(key="curve_smooth").set_value(0.0).run()
    fig = charts(at)[0]
    t = traces(fig)
    assert t[appruns.LSTM]["x"] == [r["tokens"] for r in train]
    assert t[appruns.LSTM]["y"] == pytest.approx([r["ppl"] for r in train])  # no smoothing
    assert f"{appruns.LSTM} (raw)" not in t
    assert fig["layout"]["yaxis"]["type"] == "log"
    assert fig["layout"]["yaxis"]["title"]["text"] == "perplexity"


# --- Attention ----------------------------------------------------------------------------
def attention_text(at, text: str):
    at.text_area[0].set_value(text).run()
    assert not at.exception, at.exception
    return at


def test_attention_page_draws_offline_bertviz_heatmaps_and_head_statistics(root, capsys):
    at = app(root, "attention")
    at.selectbox(key="attn_run").set_value(appruns.TRANSFORMER).run()
    assert at.title[0].value == "Attention"
    (head,) = iframes(at)
    tab(at, "attn_tab", "model view")
    (model,) = iframes(at)
    for html in (head, model):
        assert "d3js.org v5.7.0" in html and "jQuery v3" in html and "requirejs.config" in html
        assert "cdnjs" not in html and "<script src" not in html
        assert "labkitSaveSvg" in html and "labkitSavePng" in html  # the export buttons
    assert '"left_text": ["the", "dogs", "near"' in head
    (grid,) = charts(tab(at, "attn_tab", "heatmaps"))
    heads = [t for t in grid["data"] if t["name"] != "causal mask"]
    masks = [t for t in grid["data"] if t["name"] == "causal mask"]
    assert len(heads) == len(masks) == 8  # 2 layers x 4 heads, each with its mask drawn
    mask = array(masks[0]["z"])
    assert mask[0, 1] == 1 and np.isnan(mask[1, 0]) and np.isnan(mask[0, 0])  # grey above the diagonal
    weights = array(heads[0]["z"])
    assert np.nansum(weights, axis=1) == pytest.approx(np.ones(len(weights)), abs=1e-3)
    (stats_chart,) = charts(tab(at, "attn_tab", "statistics"))
    assert [t["name"] for t in stats_chart["data"]] == ["entropy_ratio", "mean_distance", "first_token_share",
                                                       "previous_token_share"]
    table = at.dataframe[0].value
    assert len(table) == 8 and list(table.columns)[:3] == ["layer", "head", "entropy (nats)"]
    # each head's numbers, worked out from the weights the heatmap drew (queries after the first:
    # position 0 has no choice): the mean share on the first token, entropy, distance, previous token
    for i, head_trace in enumerate(heads):
        w = np.nan_to_num(array(head_trace["z"]))[1:]  # (queries 1.., keys)
        T = w.shape[1]
        row = table.iloc[i]
        entropy = -np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0).sum(1)
        assert row["first-token share"] == pytest.approx(w[:, 0].mean(), abs=1e-3)
        assert row["entropy (nats)"] == pytest.approx(entropy.mean(), abs=2e-3)
        assert row["entropy / uniform"] == pytest.approx((entropy / np.log(np.arange(2, T + 1))).mean(), abs=2e-3)
        assert row["previous-token share"] == pytest.approx(np.diagonal(w).mean(), abs=1e-3)
    assert "Attention sink" in texts(at.markdown) and "first token" in texts(at.markdown)

    sentence = " ".join(("the dogs near the old cat run quickly . " * 8).split()[:64])
    at.text_area[0].set_value(sentence)
    start = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - start
    assert not at.exception
    assert "64 tokens, 2 layers x 4 heads." in texts(at.caption)
    assert not at.warning  # 64 tokens fit: no cut
    with capsys.disabled():
        print(f"\nAppTest: attention page (head statistics) with a 64-token input ran in {seconds:.2f} s (server side)")


@pytest.mark.parametrize("text, expect", [
    ("", "Type a sentence"),
    ("   \n\t ", "Type a sentence"),
    ("word " * 10_000, "The input has 10,000 tokens; showing the first 64"),
    ("naïve café 🤖 \u202eRTL\u202c \ufeff nul\x00 </script><script>alert(1)</script> <unk> <eos>", None),
])
def test_attention_page_survives_odd_inputs(root, text, expect):
    at = app(root, "attention")
    at = attention_text(at, text)
    if expect:
        assert expect in texts(at.info) + texts(at.warning)
    else:
        assert len(iframes(at)) == 1
        assert "alert(1)</script>" not in iframes(at)[0]


def test_attention_page_says_when_its_run_is_damaged_or_deleted_and_shows_no_other(root, tmp_path):
    own = tmp_path / "runs"
    shutil.copytree(root / appruns.TRANSFORMER, own / "t1")
    shutil.copytree(root / appruns.TRANSFORMER, own / "t2")
    at = app(own, "attention")
    assert at.selectbox(key="attn_run").value == "t1" and len(iframes(at)) == 1
    (own / "t1" / "model.safetensors").write_bytes(b"\x00garbage")  # damaged under the app
    at.run()
    assert not at.exception and "t1** cannot be loaded" in texts(at.error)
    shutil.rmtree(own / "t1")  # deleted under the app: said so, and t2 is not shown in its place
    at.run()
    assert not at.exception and "**t1** is gone from the runs folder" in texts(at.warning)
    assert at.selectbox(key="attn_run").value is None and not iframes(at)
    at.run()  # the notice stays until another run is picked
    assert "**t1** is gone" in texts(at.warning) and not iframes(at)
    at.selectbox(key="attn_run").set_value("t2").run()
    assert not at.warning and len(iframes(at)) == 1
    shutil.rmtree(own / "t2")
    at.run()
    assert not at.exception and "need a Transformer run" in texts(at.info)


# --- Compare ------------------------------------------------------------------------------
SENTENCE = "the dogs near the old cat run quickly ."


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory) -> Path:
    """A tiny Transformer trained on the copy task: its vocabulary is s0..s31 and |, so it knows
    no word of the agreement grammar (a run that does not match the others)."""
    from labkit.data import DataConfig
    from labkit.data.lm import load_lm_data
    from labkit.models import TransformerConfig
    from labkit.train import TrainConfig
    from labkit.train.pretrain import pretrain

    data_config = DataConfig(corpus="synthetic-copy", train_tokens=4_000, eval_tokens=500)
    data = load_lm_data(data_config)
    path = tmp_path_factory.mktemp("copy-runs") / "copy-transformer"
    pretrain(TransformerConfig(vocab_size=data.tokenizer.vocab_size, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                               context_length=appruns.CONTEXT, dropout=0.0),
             TrainConfig(max_steps=2, batch_size=4, seq_len=16, eval_every=2, log_every=1, device="cpu"),
             data_config, path, data=data)
    return path


def compare_app(root: Path, a: str = appruns.LSTM, b: str = appruns.TRANSFORMER):
    at = app(root, "compare")
    at.selectbox(key="cmp_run_a").set_value(a).run()
    at.selectbox(key="cmp_run_b").set_value(b).run()
    assert not at.exception, at.exception
    return at


def masked_map(trace: dict) -> np.ndarray:
    """A position heatmap's z with the causal mask's NaNs read as 0 (as the library's maps hold)."""
    return np.nan_to_num(array(trace["z"]))


def test_compare_page_sets_two_runs_side_by_side_like_the_library(root, capsys):
    from labkit.data.synthetic import agreement_items, synthetic_splits
    from labkit.inspect import agreement_accuracy, capture_attention, compare_surprisal, loss_by_position, saliency

    start = time.perf_counter()
    at = compare_app(root)
    seconds = time.perf_counter() - start
    assert at.title[0].value == "Compare"
    assert (f"Not language models, not shown: {appruns.BOW}, {appruns.CLASSIFIER}, {appruns.SCRATCH}, "
            f"{appruns.CLASSIFIER_TF}, sst2-large, sst2-small") in texts(at.caption)
    assert not at.warning and not at.error
    lstm, tf = load_run(root / appruns.LSTM), load_run(root / appruns.TRANSFORMER)
    runs = {appruns.LSTM: lstm, appruns.TRANSFORMER: tf}
    gradient, occlusion = charts(at)

    # Saliency of both runs, beside the Transformer's attention (last layer, mean of the heads).
    attention = capture_attention(tf.model, tf.tokenizer, SENTENCE).attention  # (L, H, T, T)
    for fig, method, title in ((gradient, "gradient", "gradient × input"), (occlusion, "occlusion", "occlusion")):
        t = traces(fig)
        assert set(t) == {f"{appruns.LSTM}: {title}", f"{appruns.TRANSFORMER}: {title}",
                          f"{appruns.TRANSFORMER}: attention, L1 mean", "causal mask"}
        for name, run in runs.items():
            expected = saliency(run.model, run.tokenizer, SENTENCE, method=method).shares()  # (9, 9)
            assert masked_map(t[f"{name}: {title}"]) == pytest.approx(expected, abs=1e-5)
        assert masked_map(t[f"{appruns.TRANSFORMER}: attention, L1 mean"]) == pytest.approx(
            attention[1].mean(0), abs=1e-6)
    table = at.dataframe[0].value
    assert list(table["run"]) == [appruns.LSTM, appruns.TRANSFORMER] * 2 + [appruns.TRANSFORMER]

    # One prediction position and one head: every map is cut to tokens 0..3, the head is L0 H1.
    position = next(s for s in at.select_slider if s.label.startswith("Explain"))
    position.set_value(3).run()
    at.selectbox(key=f"cmp_head::{appruns.TRANSFORMER}").set_value((0, 1)).run()
    assert not at.exception
    t = traces(charts(at)[0])
    expected = saliency(lstm.model, lstm.tokenizer, SENTENCE).shares()
    assert masked_map(t[f"{appruns.LSTM}: gradient × input"]) == pytest.approx(expected[:4, :4], abs=1e-5)
    assert masked_map(t[f"{appruns.TRANSFORMER}: attention, L0 H1"]) == pytest.approx(attention[0, 1, :4, :4], abs=1e-6)
    assert "the bottom row is token 3 (the), explaining the text's next token" in texts(at.caption)
    assert list(at.dataframe[0].value["explains"])[:2] == ["old", "old"]

    # Surprisal side by side: the same bits as the library, the tokens coloured in HTML too.
    (surprisal,) = charts(tab(at, "cmp_tab", "surprisal"))
    bits = compare_surprisal({n: (r.model, r.tokenizer) for n, r in runs.items()}, SENTENCE)
    z = array(traces(surprisal)["surprisal"]["z"])
    assert z == pytest.approx(np.stack([bits[appruns.LSTM].bits, bits[appruns.TRANSFORMER].bits]), abs=1e-5)
    top = max(float(b.bits.max()) for b in bits.values())  # one colour scale for the HTML and the chart
    assert traces(surprisal)["surprisal"]["zmax"] == pytest.approx(top)
    html = at.get("html")[0].value
    assert f"<b>{appruns.LSTM}</b>" in html and "bits/token" in html and ">dogs</span>" in html
    assert f"0 to {top:.1f} bits" in html
    assert f"{appruns.LSTM} {bits[appruns.LSTM].mean_bits:.2f} bits/token" in texts(at.caption)

    # Loss by position on the corpus's validation text, windows of the training length (32).
    (positions,) = charts(tab(at, "cmp_tab", "loss by position"))
    valid = synthetic_splits()["valid"]
    for name, run in runs.items():
        curve = loss_by_position(run.model, run.tokenizer.encode_lines(valid), 32, max_windows=64)
        assert traces(positions)[name]["y"] == pytest.approx(curve.tolist(), abs=1e-5)
    assert "64 windows of 32 tokens of the synthetic validation text" in texts(at.caption)

    # Agreement accuracy by distance on the synthetic grammar, with chance drawn at 50%.
    (agreement,) = charts(tab(at, "cmp_tab", "agreement by distance"))
    items = agreement_items(20, (0, 2, 4, 6, 8, 10, 12))
    for name, run in runs.items():
        rows = agreement_accuracy(run.model, run.tokenizer, items)
        assert traces(agreement)[name]["x"] == [r["distance"] for r in rows]
        assert traces(agreement)[name]["y"] == pytest.approx([r["accuracy"] for r in rows])
    assert len(at.dataframe[0].value) == 14
    with capsys.disabled():
        print(f"\nAppTest: compare page, first draw with two runs in {seconds:.2f} s (server side)")


@pytest.mark.parametrize("text, expect", [
    ("", "Type a sentence"),
    ("   \n ", "Type a sentence"),
    ("word " * 10_000, "The input has 10,000 tokens; showing the first 64"),
])
def test_compare_page_survives_odd_sentences(root, text, expect):
    at = compare_app(root)
    at.text_area[0].set_value(text).run()
    assert not at.exception, at.exception
    assert expect in texts(at.info) + texts(at.warning)
    tab(at, "cmp_tab", "agreement by distance")  # drawn from its own test sentences
    assert set(traces(charts(at)[0])) == {appruns.LSTM, appruns.TRANSFORMER}


def test_compare_page_says_when_a_run_is_not_a_language_model(root, tmp_path):
    own = tmp_path / "runs"
    for name in (appruns.LSTM, "sst2-small"):
        shutil.copytree(root / name, own / name)
    at = app(own, "compare")
    assert "Compare needs two language-model runs with weights" in at.info[0].value
    assert f"has 1 ({appruns.LSTM})" in at.info[0].value
    assert "Not language models, not shown: sst2-small" in texts(at.caption)


def test_compare_page_explains_mismatched_runs_and_labels_each_with_its_own_tokens(root, copy_run, tmp_path):
    own = tmp_path / "runs"
    shutil.copytree(root / appruns.LSTM, own / appruns.LSTM)
    shutil.copytree(copy_run, own / copy_run.name)
    at = compare_app(own, appruns.LSTM, copy_run.name)
    warnings = texts(at.warning)
    assert f"Mismatched runs: **{appruns.LSTM}** was trained on synthetic and **{copy_run.name}** on synthetic-copy" \
        in warnings
    # The copy run reads every word of the sentence as <unk>: its panels show its own tokens.
    gradient = traces(charts(at)[0])
    ticks = {name: [label.split(" ", 1)[1] for label in gradient[f"{name}: gradient × input"]["x"]]
             for name in (appruns.LSTM, copy_run.name)}
    assert ticks[appruns.LSTM] == SENTENCE.split()
    assert ticks[copy_run.name] == ["<unk>"] * 9
    assert "The runs split the sentence into different tokens" in texts(at.info)
    tab(at, "cmp_tab", "loss by position")
    assert "pick two runs trained on the same corpus" in texts(at.info)
    tab(at, "cmp_tab", "agreement by distance")
    # the copy run knows none of the grammar's words: no sentence in its own words, said so
    assert f"**{copy_run.name}**: no agreement sentence" in texts(at.warning) and "lacks too much" in texts(at.warning)
    assert set(traces(charts(at)[0])) == {appruns.LSTM}  # agreement for the LSTM alone


# --- Generate -----------------------------------------------------------------------------
def generate_app(root: Path, prompt: str, first: str = appruns.TRANSFORMER, second: str = appruns.LSTM, **settings):
    at = app(root, "generate")
    at.selectbox(key="gen_run").set_value(first)
    at.selectbox(key="gen_run_b").set_value(second)
    at.text_area(key="gen_prompt").set_value(prompt)
    for key, value in settings.items():
        getattr(at, "toggle" if key == "gen_eos" else "number_input" if key == "gen_seed" else "slider")(key=key) \
            .set_value(value)
    at.run()
    at.button(key="gen_go").click().run()
    assert not at.exception, at.exception
    return at


def test_generate_page_streams_two_runs_side_by_side_like_the_library(root):
    at = generate_app(root, "the dogs", gen_seed=3, gen_len=12, gen_eos=False)
    assert at.title[0].value == "Generate"
    shown = texts(at.markdown)
    config = SamplingConfig(temperature=0.8, top_k=0, top_p=0.9, max_tokens=12, seed=3, stop_at_eos=False)
    probabilities = [fig for fig in charts(at) if "p (model)" in traces(fig)]
    assert len(probabilities) == 2
    for name, fig in zip((appruns.TRANSFORMER, appruns.LSTM), probabilities):
        loaded = load_run(root / name)
        expected = generate(loaded.model, loaded.tokenizer, "the dogs", config)
        assert len(expected.tokens) == 12
        assert expected.text in re.sub(r"\\(.)", r"\1", shown)  # the page escapes markdown: . < > ...
        bars = traces(fig)["p (model)"]
        assert bars["y"] == pytest.approx([t.model_prob for t in expected.tokens])
        assert bars["text"] == [t.text for t in expected.tokens]
        assert set(traces(fig)) == {"p (model)", "p (sampling)", "entropy (nats)"}
    assert texts(at.caption).count("12 tokens at") == 2
    assert "Generation 1 at" in texts(at.caption) and "seed 3" in texts(at.caption)
    assert "Temperature" in texts(at.markdown)  # the explanation stays with the results


@pytest.mark.parametrize("prompt, notice", [
    ("", "empty prompt: starting from <eos>"),
    ("the " * 10_000, "cut to the last 64 tokens"),
    ("🤖 \u202e \x00 ``` $x$ <b>bold</b>", "mapped to <unk>"),
])
def test_generate_page_survives_odd_prompts(root, prompt, notice):
    at = generate_app(root, prompt, gen_len=5)
    assert notice in texts(at.caption)
    assert texts(at.caption).count("tokens at") == 2


def test_generate_page_shows_what_the_model_read_of_an_empty_or_long_prompt(root):
    at = generate_app(root, "", second="(none)", gen_len=3)
    shown = texts(at.markdown)
    assert "*(empty prompt: the model starts from <eos>, as at the start of a line)* **→**" in shown
    assert "** **→**" not in shown
    # 140 words, cut to the context's last 64, then (over 300 characters) to whole words at its end.
    words = "the clever doctor behind the tired farmer".split() * 20
    at = generate_app(root, " ".join(words), second="(none)", gen_len=3)
    (line,) = [m for m in texts(at.markdown).split("\n") if "**→**" in m]
    kept = line.split("**→**")[0].strip("* ")
    assert kept.startswith("… ")
    tail = kept[2:].split()
    assert 40 < len(tail) < 64 and tail == words[-len(tail):]  # whole words, the prompt's last ones


def test_generate_page_works_with_a_single_run_and_keeps_its_errors(root, tmp_path):
    own = tmp_path / "runs"
    shutil.copytree(root / appruns.LSTM, own / appruns.LSTM)
    at = app(own, "generate")
    assert at.selectbox(key="gen_run_b").options == ["(none)"]
    at.button(key="gen_go").click().run()
    assert not at.exception and texts(at.caption).count("tokens at") == 1 and "Generation 1 at" in texts(at.caption)
    at.button(key="gen_go").click().run()
    assert "Generation 2 at" in texts(at.caption)  # pressing again is seen, even with the same text
    (own / appruns.LSTM / "model.safetensors").write_bytes(b"\x00garbage")
    at.button(key="gen_go").click().run()
    assert not at.exception and f"**{appruns.LSTM}** cannot be loaded" in texts(at.error)
    at.run()  # any later rerun (a widget moved, a refresh) keeps the message on the page
    assert f"**{appruns.LSTM}** cannot be loaded" in texts(at.error)


# --- Fine-tuning --------------------------------------------------------------------------
def test_finetune_page_says_when_there_are_no_runs(tmp_path):
    at = app(tmp_path / "runs", "finetune")
    assert at.title[0].value == "Fine-tuning"
    assert "No fine-tuning runs yet" in at.info[0].value


def test_finetune_page_reads_cards_generically(root):
    at = app(root, "finetune")
    at.selectbox(key="ft_run").set_value("sst2-large").run()
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["sst2-large", "accuracy"] == 0.81 and table.loc["sst2-small", "train_size"] == 100
    # beside every accuracy, what it predicted: the confusion matrix's columns (340 + 78, 88 + 366)
    assert table.loc["sst2-large", "predicted"] == "negative 418 · positive 454"
    curve, matrix, val = charts(at)
    assert val["data"][0]["x"] == [10, 20, 30, 40] and val["data"][0]["name"] == "validation accuracy"
    assert array(matrix["data"][0]["z"]).tolist() == [[340, 88], [78, 366]]
    assert list(matrix["data"][0]["y"]) == ["negative", "positive"]
    per_class = at.dataframe[1].value.set_index("label")
    assert per_class.loc["positive", "recall"] == pytest.approx(366 / 444)
    assert at.metric[0].value == "0.810"
    # Its weights are not real: the page says so and carries on.
    assert "sst2-large** cannot be loaded for predictions" in texts(at.error)


def test_finetune_page_draws_one_learning_curve_line_per_condition(root):
    at = app(root, "finetune")
    curve = charts(at)[0]
    lines = {name: dict(zip(t["text"], t["y"])) for name, t in traces(curve).items()}  # line -> run -> accuracy
    line_of = {run: name for name, runs in lines.items() for run in runs}
    assert line_of[appruns.SCRATCH] == "lstm classifier · scratch"  # pretrained and scratch apart
    assert line_of[appruns.CLASSIFIER] == line_of["sst2-small"] == "lstm classifier · pretrained, full"
    assert line_of[appruns.CLASSIFIER_TF] == "transformer classifier · pretrained, full"
    assert line_of[appruns.BOW] == "bow · bag of words"  # the yardstick: its own line
    for run, line in line_of.items():
        assert lines[line][run] == RunDir(root / run).read_card()["accuracy"]
    assert curve["layout"]["yaxis"]["range"] == [0, 1.02]  # accuracy on 0..1, with chance at 50%
    assert "pretrained, full, scratch" in texts(at.caption)


def test_finetune_page_tries_a_sentence_with_a_real_classifier(root):
    from labkit.inspect.classifier import Classifier

    at = app(root, "finetune")
    at.selectbox(key="ft_run").set_value(appruns.CLASSIFIER).run()
    at.text_input(key="ft_sentence").set_value("the dogs near the cat").run()
    assert not at.exception
    expected = Classifier(root / appruns.CLASSIFIER).predict("the dogs near the cat")
    assert f"Prediction: **{expected.label}** with probability **{expected.prob:.3f}**" in texts(at.markdown)


def test_every_page_says_when_its_run_was_deleted_while_selected(root, tmp_path):
    own = tmp_path / "runs"
    for name in (appruns.LSTM, appruns.TRANSFORMER, "sst2-small", "sst2-large"):
        shutil.copytree(root / name, own / name)
    at = app(own, "runs")
    at.multiselect(key="compare_runs").set_value([appruns.LSTM, appruns.TRANSFORMER]).run()
    at.selectbox(key="detail_run").set_value(appruns.LSTM).run()
    for page in ("curves", "generate", "compare", "lens", "finetune"):
        at.switch_page(f"views/{page}.py").run()
        if page == "compare":
            at.selectbox(key="cmp_run_a").set_value(appruns.LSTM).run()
        if page == "generate":
            at.selectbox(key="gen_run").set_value(appruns.LSTM).run()
            at.button(key="gen_go").click().run()
        if page == "lens":
            at.selectbox(key="lens_run").set_value(appruns.LSTM).run()
        if page == "finetune":
            at.selectbox(key="ft_run").set_value("sst2-small").run()
        assert not at.exception
    for name in (appruns.LSTM, "sst2-small"):
        shutil.rmtree(own / name)
    for page, gone in (("runs", appruns.LSTM), ("curves", None), ("generate", appruns.LSTM), ("finetune", "sst2-small"),
                       ("attention", None), ("compare", None), ("lens", appruns.LSTM), ("start", None)):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, at.exception)
        assert appruns.LSTM not in texts(at.caption) + texts(at.markdown).replace(f"**{appruns.LSTM}** is gone", "")
        if gone:
            assert f"**{gone}** is gone from the runs folder" in texts(at.warning).replace("\\-", "-"), page
    at.switch_page("views/runs.py").run()
    assert list(at.dataframe[0].value["run"]) == ["sst2-large", appruns.TRANSFORMER]
