"""The app's newer views in Streamlit's AppTest, each control checked against the library it calls
(labkit.inspect computed here on the same runs): the start page, chart export, surgery on
Attention and Compare, attention before and after fine-tuning, long inputs, perplexity by word
frequency, the logit lens, Generate's next-token distributions and Watch it learn."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from labkit.data.synthetic import synthetic_splits
from labkit.generate import SamplingConfig, generate
from labkit.inspect import attention_change, capture_attention, perplexity_by_frequency, style, token_counts
from labkit.inspect.attention import long_attention
from labkit.inspect.lens import layer_label, logit_lens
from labkit.inspect.surgery import ablate, head_importance, unit_importance
from labkit.inspect.timeline import read_timeline
from labkit.runs import RunDir, load_run
from labkit.runs.timeline import timeline_path

import appruns
from appruns import app, array, chart_configs, charts, tab, texts, traces

SENTENCE = "the dogs near the old cat run quickly ."
EXAMPLES = ["the dogs near the old cat run quickly .", "mia met leo at the river . mia gave leo a map . later leo smiled .",
            "the king that the small robots follow sings ."]  # the app's example sentences of the synthetic corpus


@pytest.fixture(scope="module")
def runs(root):
    return {name: load_run(root / name) for name in (appruns.LSTM, appruns.TRANSFORMER, appruns.CLASSIFIER_TF)}


pytestmark = pytest.mark.usefixtures("no_runs_env")


def bars(fig: dict) -> np.ndarray:
    return array(fig["data"][0]["y"])


# --- Start --------------------------------------------------------------------------------
def test_start_page_tells_a_path_with_the_users_own_numbers(root, tmp_path):
    own = tmp_path / "runs"
    for name in (appruns.LSTM, appruns.TRANSFORMER, appruns.CLASSIFIER, appruns.SCRATCH):
        shutil.copytree(root / name, own / name)
    cards = {n: RunDir(own / n).read_card() for n in (appruns.LSTM, appruns.TRANSFORMER, appruns.CLASSIFIER, appruns.SCRATCH)}
    at = app(own)  # the first page
    assert at.title[0].value == "labkit"
    shown = texts(at.markdown).replace("\\", "")
    assert shown.count(":material/check_circle:") == 4
    ppl = {n: cards[n]["best_val_ppl"] for n in (appruns.LSTM, appruns.TRANSFORMER)}
    best = min(ppl, key=ppl.get)
    assert f"You have 2 language-model runs; the lowest validation perplexity is **{ppl[best]:,.1f}** ({best}" in shown
    assert f"**{appruns.TRANSFORMER}** has 2 layers × 4 heads, 8 heads in all" in shown
    assert (f"**{appruns.LSTM}** (lstm) reaches a validation perplexity of {ppl[appruns.LSTM]:,.1f} and "
            f"**{appruns.TRANSFORMER}** (transformer) {ppl[appruns.TRANSFORMER]:,.1f} on the same corpus (synthetic)") in shown
    accuracy = {n: cards[n]["accuracy"] for n in (appruns.CLASSIFIER, appruns.SCRATCH)}
    assert f"Pretrained: {accuracy[appruns.CLASSIFIER]:.1%}; trained from scratch: {accuracy[appruns.SCRATCH]:.1%}" in shown
    links = {e.proto.label for e in at.get("page_link")}
    assert {"Runs", "Attention", "Compare", "Logit lens", "Generate", "Fine-tuning", "Watch it learn"} <= links


def test_start_page_says_what_to_run_first_in_an_empty_folder(tmp_path):
    at = app(tmp_path / "runs")
    shown = texts(at.markdown)
    assert shown.count(":material/radio_button_unchecked:") == 4 and ":material/check_circle:" not in shown
    assert "**Train demo models** on the Runs page" in shown and "`labkit finetune RUN`" in shown
    assert f"(`{tmp_path / 'runs'}`, set in the sidebar)" in shown  # a code span, shown as it is (no backslashes)


# --- export -------------------------------------------------------------------------------
def test_every_chart_downloads_as_png_or_svg_as_the_sidebar_says(root):
    at = app(root, "curves")
    (config,) = chart_configs(at)
    assert config["toImageButtonOptions"] == {"format": "png", "scale": 2, "filename": "labkit-loss-chart"}
    at.radio(key="export_format").set_value("SVG").run()
    (config,) = chart_configs(at)
    assert config["toImageButtonOptions"]["format"] == "svg"
    at.switch_page("views/finetune.py").run()  # the choice holds on every page
    assert {c["toImageButtonOptions"]["format"] for c in chart_configs(at)} == {"svg"}


# --- surgery --------------------------------------------------------------------------------
def test_attention_surgery_switches_heads_off_as_the_library_does(root, runs):
    tf = runs[appruns.TRANSFORMER]
    at = app(root, "attention")
    at.selectbox(key="attn_run").set_value(appruns.TRANSFORMER).run()
    tab(at, "attn_tab", "surgery")
    ranking_fig, effect_fig = charts(at)
    ranking = head_importance(tf.model, tf.tokenizer, EXAMPLES)  # the sentence is the first example
    expected = np.full((2, 4), np.nan)
    for r in ranking:
        expected[r["layer"], r["head"]] = r["loss_increase"]
    assert array(ranking_fig["data"][0]["z"]) == pytest.approx(expected, abs=1e-6)
    top = (ranking[0]["layer"], ranking[0]["head"])
    assert at.multiselect(key="attn_surgery_heads").value == [top]  # the costliest head, to start with
    effect = ablate(tf.model, tf.tokenizer, SENTENCE, heads=[top])
    assert bars(effect_fig) == pytest.approx(-effect.delta, abs=1e-6)  # each token's loss change: -Δ log p
    at.multiselect(key="attn_surgery_heads").set_value([(0, 1), (1, 2)]).run()
    effect = ablate(tf.model, tf.tokenizer, SENTENCE, heads=[(0, 1), (1, 2)])
    assert bars(charts(at)[1]) == pytest.approx(-effect.delta, abs=1e-6)
    assert f"changes by {style.number(effect.loss_increase, signed=True)} nats/token" in texts(at.caption)
    at.multiselect(key="attn_surgery_heads").set_value([]).run()
    assert "Pick something to switch off." in texts(at.caption) and len(charts(at)) == 1


def test_compare_surgery_switches_an_rnns_units_or_layer_off(root, runs):
    lstm = runs[appruns.LSTM]
    at = app(root, "compare")
    at.selectbox(key="cmp_run_a").set_value(appruns.LSTM).run()
    at.selectbox(key="cmp_run_b").set_value(appruns.TRANSFORMER).run()
    tab(at, "cmp_tab", "surgery")
    key = f"cmp_surgery::{appruns.LSTM}"
    ranking = unit_importance(lstm.model, lstm.tokenizer, EXAMPLES, 0, top=20)
    assert at.multiselect(key=f"{key}_units::0").value == [r["unit"] for r in ranking[:3]]
    units_fig, effect_fig = charts(at)[:2]  # the LSTM's column comes first
    assert bars(units_fig) == pytest.approx([r["loss_increase"] for r in ranking], abs=1e-6)
    effect = ablate(lstm.model, lstm.tokenizer, SENTENCE, units=[(0, r["unit"]) for r in ranking[:3]])
    assert bars(effect_fig) == pytest.approx(-effect.delta, abs=1e-6)
    at.multiselect(key=f"{key}_units::0").set_value([5]).run()
    assert bars(charts(at)[1]) == pytest.approx(-ablate(lstm.model, lstm.tokenizer, SENTENCE, units=[(0, 5)]).delta,
                                                abs=1e-6)
    at.radio(key=f"{key}_what").set_value("the whole layer's state").run()
    effect = ablate(lstm.model, lstm.tokenizer, SENTENCE, layers=[0])
    assert bars(charts(at)[0]) == pytest.approx(-effect.delta, abs=1e-6)
    assert "With layer 0's state switched off" in texts(at.caption)


# --- attention before and after fine-tuning, long inputs ------------------------------------
def test_attention_before_and_after_fine_tuning(root, runs):
    tf, tuned = runs[appruns.TRANSFORMER], runs[appruns.CLASSIFIER_TF]
    at = app(root, "attention")
    at.selectbox(key="attn_run").set_value(appruns.TRANSFORMER).run()
    tab(at, "attn_tab", "fine-tuning")
    assert at.selectbox(key="attn_ft_run").value == appruns.CLASSIFIER_TF
    before = capture_attention(tf.model, tf.tokenizer, SENTENCE).attention
    after = capture_attention(tuned.model, tuned.tokenizer, SENTENCE).attention
    change = attention_change(before, after)
    assert change.max() > 0.01  # the fine-tuning moved the heads
    grid, difference = charts(at)
    assert array(grid["data"][0]["z"]) == pytest.approx(change, abs=1e-6)
    layer, head = np.unravel_index(change.argmax(), change.shape)
    assert at.selectbox(key=f"attn_ft_head::{appruns.CLASSIFIER_TF}").value == (layer, head)  # most changed first
    maps = traces(difference)
    assert np.nan_to_num(array(maps["after - before"]["z"])) == pytest.approx(
        np.tril(after[layer, head] - before[layer, head]), abs=1e-6)
    at.selectbox(key=f"attn_ft_head::{appruns.CLASSIFIER_TF}").set_value((0, 0)).run()
    assert np.nan_to_num(array(traces(charts(at)[1])["before"]["z"])) == pytest.approx(before[0, 0], abs=1e-6)


def test_attention_on_a_long_input_pooled_and_zoomable(root, runs):
    tf = runs[appruns.TRANSFORMER]
    at = app(root, "attention")
    at.selectbox(key="attn_run").set_value(appruns.TRANSFORMER).run()
    tab(at, "attn_tab", "long inputs")
    words = " ".join(" ".join(synthetic_splits()["valid"]).split()[:2048])  # the run's validation text
    expected = long_attention(tf.model, tf.tokenizer, words, max_tokens=1024, cells=256, layer=1)
    (fig,) = charts(at)
    assert np.nan_to_num(array(fig["data"][0]["z"])) == pytest.approx(np.tril(expected.matrix), abs=1e-6)
    assert "1,024 tokens in 256 x 256 cells (blocks of about 4.0 tokens)" in texts(at.caption)
    at.select_slider(key="attn_long_tokens").set_value(128).run()
    at.selectbox(key="attn_long_head").set_value(2).run()
    expected = long_attention(tf.model, tf.tokenizer, words, max_tokens=128, cells=256, layer=1, head=2)
    assert np.nan_to_num(array(charts(at)[0]["data"][0]["z"])) == pytest.approx(np.tril(expected.matrix), abs=1e-6)
    assert "128 tokens in 128 x 128 cells (one cell per token)" in texts(at.caption)
    at.radio(key="attn_long_source").set_value("the sentence above").run()
    assert "9 tokens in 9 x 9 cells" in texts(at.caption)


# --- Compare: word frequency ----------------------------------------------------------------
def test_compare_perplexity_by_word_frequency_from_each_runs_training_counts(root, runs):
    at = app(root, "compare")
    at.selectbox(key="cmp_run_a").set_value(appruns.LSTM).run()
    at.selectbox(key="cmp_run_b").set_value(appruns.TRANSFORMER).run()
    (fig,) = charts(tab(at, "cmp_tab", "word frequency"))
    splits = synthetic_splits()
    for name in (appruns.LSTM, appruns.TRANSFORMER):
        run = runs[name]
        counts = token_counts(run.tokenizer.encode_lines(splits["train"])[:20_000], run.tokenizer.vocab_size)
        rows = perplexity_by_frequency(run.model, run.tokenizer.encode_lines(splits["valid"]), counts, 32,
                                       max_windows=64)
        assert traces(fig)[name]["y"] == pytest.approx([r["ppl"] for r in rows], rel=1e-6)
    table = at.dataframe[0].value
    assert set(table["run"]) == {appruns.LSTM, appruns.TRANSFORMER} and "perplexity" in table.columns


# --- Logit lens -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", [appruns.LSTM, appruns.TRANSFORMER])
def test_logit_lens_page_shows_each_layers_prediction(root, runs, name):
    run = runs[name]
    at = app(root, "lens")
    at.selectbox(key="lens_run").set_value(name).run()
    lens = logit_lens(run.model, run.tokenizer, SENTENCE, top_k=5, max_tokens=64)
    (fig,) = charts(at)
    grid = fig["data"][0]
    assert array(grid["z"]) == pytest.approx(np.exp(lens.target_logp[::-1]), abs=1e-6)  # the top layer first
    assert [row[0].split(" ✓")[0] for row in grid["text"]] == [layer[0][0] for layer in lens.top_tokens[::-1]]
    at.select_slider(key=f"lens_position::{len(lens.tokens)}").set_value(2).run()
    table = at.dataframe[0].value
    top = len(lens.layer_names) - 1
    assert list(table["layer"]) == [layer_label(n) for n in lens.layer_names[::-1]]
    assert list(table["layer"])[-1] == "embeddings" and len(table) == runs[name].model.config.n_layers + 1
    assert table["rank of the actual next token"].iloc[0] == lens.target_rank[top][2]
    assert table["guess 1"].iloc[0] == f"{lens.top_tokens[top][2][0]} ({lens.top_probs[top][2][0]:.2f})"


# --- Generate: the distribution of each step ------------------------------------------------
def test_generate_shows_each_steps_distribution_as_model_and_as_sampled(root):
    at = app(root, "generate")
    at.selectbox(key="gen_run").set_value(appruns.TRANSFORMER)
    at.selectbox(key="gen_run_b").set_value("(none)")
    at.text_area(key="gen_prompt").set_value("the dogs")
    at.slider(key="gen_len").set_value(6)
    at.slider(key="gen_topp").set_value(0.3)
    at.toggle(key="gen_eos").set_value(False)
    at.run()
    at.button(key="gen_go").click().run()
    loaded = load_run(root / appruns.TRANSFORMER)
    expected = generate(loaded.model, loaded.tokenizer, "the dogs",
                        SamplingConfig(temperature=0.8, top_p=0.3, max_tokens=6, seed=1, stop_at_eos=False))
    key = f"gen_step::{appruns.TRANSFORMER}::1"
    for step in (0, 4):
        if step:
            at.select_slider(key=key).set_value(step).run()
        token = expected.tokens[step]
        fig = traces(charts(at)[1])
        assert fig["model (temperature 1)"]["x"] == pytest.approx([c.model_prob for c in token.top])
        assert fig["sampled from"]["x"] == pytest.approx([c.sampling_prob for c in token.top])
        chosen = [label for label in fig["sampled from"]["y"] if label.endswith("◀")]
        assert chosen == [f"{token.text} ◀"]
        kept = sum(c.sampling_prob > 0 for c in token.top)
        assert f"{kept} of these 10 kept a chance" in texts(at.caption)
        assert "temperature 0.8 and top-p 0.3" in texts(at.caption)
    at.slider(key="gen_temp").set_value(0.0).run()
    at.button(key="gen_go").click().run()
    assert "greedy decoding (temperature 0) takes the likeliest token" in texts(at.caption)


# --- Watch it learn -------------------------------------------------------------------------
def test_watch_it_learn_steps_through_a_transformers_timeline(root):
    snapshots = read_timeline(root / appruns.TRANSFORMER)
    assert [s.step for s in snapshots] == [8, 16]  # one per evaluation
    at = app(root, "learn")
    # It opens on the first Transformer that has a timeline, not on the first run of the folder.
    assert at.selectbox(key="learn_run").value == appruns.LIVE
    assert len(charts(at)) == 5 and not at.info
    at.selectbox(key="learn_run").set_value(appruns.TRANSFORMER).run()
    loss, probes, attention, lines, grid = charts(at)
    assert np.nan_to_num(array(traces(attention)["L0 H0"]["z"])) == pytest.approx(snapshots[-1].attention[0, 0], abs=1e-6)
    assert loss["layout"]["shapes"][0]["x0"] == 16  # the step shown, on the loss curve
    assert traces(probes)["agreement"]["y"] == pytest.approx([s.probes["agreement"] for s in snapshots])
    assert traces(lines)["L1 H2"]["y"] == pytest.approx([s.head_stats["induction"][1, 2] for s in snapshots])
    assert array(grid["data"][0]["z"]) == pytest.approx(snapshots[-1].head_stats["induction"])
    at.select_slider(key=f"learn_step::{appruns.TRANSFORMER}").set_value(0).run()
    attention = charts(at)[2]
    assert np.nan_to_num(array(traces(attention)["L1 H3"]["z"])) == pytest.approx(snapshots[0].attention[1, 3], abs=1e-6)
    assert "**Step 8**" in texts(at.markdown)
    at.radio(key="learn_stat").set_value("entropy").run()
    assert traces(charts(at)[3])["L0 H1"]["y"] == pytest.approx([s.head_stats["entropy"][0, 1] for s in snapshots])


def test_watch_it_learn_follows_a_live_run_and_says_when_there_is_no_timeline(root, tmp_path):
    own = tmp_path / "runs"
    shutil.copytree(root / appruns.LIVE, own / appruns.LIVE)  # its card says running, its process lives
    shutil.copytree(root / appruns.LSTM, own / "no-timeline")
    timeline_path(own / "no-timeline").unlink()
    at = app(own, "learn")
    at.selectbox(key="learn_run").set_value(appruns.LIVE).run()
    assert f"Live: {appruns.LIVE} is still training" in texts(at.caption)
    assert at.select_slider(key=f"learn_step::{appruns.LIVE}").options == ["step 8", "step 16"]
    last = json.loads(timeline_path(own / appruns.LIVE).read_text().splitlines()[-1])
    with open(timeline_path(own / appruns.LIVE), "a", encoding="utf-8") as f:  # training appends one more
        f.write(json.dumps(last | {"step": 24}) + "\n")
    at.run()
    assert at.select_slider(key=f"learn_step::{appruns.LIVE}").options == ["step 8", "step 16", "step 24"]
    at.selectbox(key="learn_run").set_value("no-timeline").run()
    assert "**no\\-timeline** has no timeline (yet)" in texts(at.info)


def test_watch_it_learn_shows_an_rnns_probe_scores(root):
    snapshots = read_timeline(root / appruns.LSTM)
    at = app(root, "learn")
    at.selectbox(key="learn_run").set_value(appruns.LSTM).run()
    loss, probes = charts(at)
    assert traces(probes)["agreement"]["y"] == pytest.approx([s.probes["agreement"] for s in snapshots])
    assert math.isclose(probes["layout"]["shapes"][-1]["y0"], 0.5)  # chance: two verbs to choose from
