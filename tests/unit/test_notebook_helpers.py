"""labkit.notebook: the helpers the notebooks share (profiles, run folders, recipes, live curves,
measurements). Unit tests: no corpus files, tiny models."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from labkit import experiments, inspect
from labkit import notebook as nbk
from labkit.data import synthetic, tasks
from labkit.errors import LabkitError
from labkit.models import RNNConfig, TransformerConfig, build_model, count_parameters


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """No corpus anywhere: no $LABKIT_DATA, an empty cache, no downloads."""
    monkeypatch.delenv("LABKIT_DATA", raising=False)
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LABKIT_PROFILE", "smoke")
    return tmp_path


def test_profile_from_the_environment(monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", " CPU ")
    assert nbk.profile_name() == "cpu"
    monkeypatch.delenv("LABKIT_PROFILE")
    assert nbk.profile_name() == ("gpu" if torch.cuda.is_available() else "cpu")
    assert nbk.profile_name("smoke") == "smoke"
    with pytest.raises(LabkitError, match="smoke, cpu, gpu"):
        nbk.profile_name("huge")


def test_runs_root(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path / "r"))
    assert nbk.runs_root() == tmp_path / "r"
    monkeypatch.delenv("LABKIT_RUNS")
    assert nbk.runs_root().parts[-2:] == ("runs", "notebooks")


def test_start_without_data_falls_back_to_synthetic(no_data, capsys):
    lab = nbk.start("05", sst2=True)
    out = capsys.readouterr().out
    assert lab.profile == "smoke" and lab.corpus == "synthetic" and not lab.real_task
    assert "synthetic corpus" in out and "synthetic task" in out
    assert lab.runs == no_data / "runs" and lab.runs.is_dir()


def test_run_path_replaces_an_old_run_but_nothing_else(no_data):
    lab = nbk.start("02", quiet=True)
    path = lab.run_path("lstm")
    assert path.name == "02-lstm-smoke"
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    assert not lab.run_path("lstm").exists()  # an old run is removed
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    with pytest.raises(LabkitError, match="not a labkit run"):
        lab.run_path("lstm")
    assert lab.run_path("lstm", fresh=False) == path and (path / "notes.txt").exists()
    assert lab.finished_run("lstm") is None
    (path / "card.json").write_text('{"status": "finished"}')
    assert lab.finished_run("lstm") == path


def test_recipes_follow_the_profile(no_data):
    lab = nbk.start("03", quiet=True)
    smoke = nbk.lm_recipe(lab, "transformer")
    assert smoke.model.family == "transformer" and smoke.model.d_model == 64
    assert smoke.train.max_steps == 30 and smoke.data.corpus == "synthetic"
    assert nbk.lm_recipe(lab, "gru", max_steps=7).model.cell == "gru"
    assert nbk.lm_recipe(lab, "gru", max_steps=7).train.max_steps == 7
    lab.profile = "gpu"
    classic = nbk.lm_recipe(lab, "lstm")
    assert classic.model.d_hidden == 200 and classic.train.optimizer == "sgd"
    assert nbk.finetune_recipe(lab, mode="frozen").mode == "frozen"


def test_length_scale_cuts_every_training_length_and_no_evaluation_interval(no_data, monkeypatch, capsys):
    assert nbk.length_scale() == 1.0 and nbk.length_scale(" 0.25 ") == 0.25
    for bad in ("0", "-1", "1.5", "nan", "soon"):
        with pytest.raises(LabkitError, match="LABKIT_SCALE"):
            nbk.length_scale(bad)
    monkeypatch.setenv("LABKIT_SCALE", "0.01")
    lab = nbk.start("05")
    assert lab.scale == 0.01 and "LABKIT_SCALE=0.01" in capsys.readouterr().out
    assert (lab.cut(10_000), lab.cut(3), lab.cut(0), lab.cut(300.0)) == (100, 1, 0, 3.0)
    lab.profile = "gpu"  # the classic Transformer: 10,000 steps, 200 of warm-up, a validation every 500
    train = nbk.lm_recipe(lab, "transformer").train
    assert (train.max_steps, train.warmup_steps, train.eval_every) == (100, 2, 500)
    assert nbk.lm_recipe(lab, "transformer", max_steps=50).train.max_steps == 1
    (_, lstm_train), _ = nbk.budget_recipes(lab)[0].values()
    assert lstm_train.eval_every_s == 0.75  # notebook 04's race: 3 s, still 4 validations


def test_budget_recipes_give_each_family_its_own_recipe_on_one_data_config(no_data):
    lab = nbk.start("04", quiet=True)
    recipes, data = nbk.budget_recipes(lab, seed=3)
    assert set(recipes) == {"lstm", "transformer"} and data.corpus == "synthetic" and data.max_vocab == 5000
    (lstm, lstm_train), (tf, tf_train) = recipes["lstm"], recipes["transformer"]
    assert lstm.family == "rnn" and tf.family == "transformer" and lstm_train.seed == tf_train.seed == 3
    assert lstm_train.eval_every_s == tf_train.eval_every_s == nbk.BUDGET_SIZES["smoke"]["seconds"] / 4
    lab.profile = "gpu"  # the laptop recipes: each its own settings
    (_, lstm_train), (_, tf_train) = nbk.budget_recipes(lab)[0].values()
    assert (lstm_train.lr, lstm_train.seq_len, tf_train.lr, tf_train.seq_len) == (4e-3, 64, 2e-3, 128)
    assert lstm_train.eval_every_s == 75.0


def test_budget_runs_name_each_run_by_family_budget_and_seed(no_data, monkeypatch):
    monkeypatch.setitem(nbk.BUDGET_SIZES, "smoke", nbk.BUDGET_SIZES["smoke"] | {"seconds": 0.3})
    lab = nbk.start("04", quiet=True)
    for family in ("lstm", "transformer"):  # FLOPs runs an earlier race left
        stale = lab.runs / f"04-{family}-flops-s1-smoke"
        stale.mkdir(parents=True)
        (stale / "config.json").write_text("{}")
    runs = nbk.budget_runs(lab, 1)
    spent = {family: run.card["train_flops"] for family, run in runs["time"].items()}
    thrifty = min(spent, key=spent.get)
    for family in ("lstm", "transformer"):
        assert runs["time"][family].path == lab.runs / f"04-{family}-time-s1-smoke"
        assert runs["flops"][family].path == (runs["time"][family].path if family == thrifty
                                              else lab.runs / f"04-{family}-flops-s1-smoke")
    assert not (lab.runs / f"04-{thrifty}-flops-s1-smoke").exists()


def test_live_curves_collect_points():
    live = nbk.LiveCurves(x="tokens", display=False)
    a, b = live.callback("a"), live.callback("b")
    a.on_step(None, {"step": 1, "tokens": 100, "elapsed_s": 0.1, "loss": 5.0})
    a.on_step(None, {"step": 2, "tokens": 200, "elapsed_s": 0.2, "loss": 4.0})
    b.on_eval(None, {"step": 2, "tokens": 200, "elapsed_s": 0.2, "val_loss": 4.5})
    names = [t.name for t in live.fig.data]
    assert names == ["a", "a val", "b", "b val"]
    assert list(live.fig.data[0].x) == [100, 200] and list(live.fig.data[0].y) == [5.0, 4.0]
    assert list(live.fig.data[3].y) == [4.5] and len(live.fig.data[2].x) == 0
    with pytest.raises(LabkitError):
        nbk.LiveCurves(x="epochs", display=False)


def test_live_curves_redraw_one_output_with_every_point():
    """Each redraw replaces the one output of the figure's output widget (a new output, which
    JupyterLab's plotly renderer draws), at most every min_interval_s, always on evaluations."""
    import ipywidgets

    live = nbk.LiveCurves(x="step", min_interval_s=3600, display=False)
    live._view = ipywidgets.Output()  # what display=True shows in the notebook
    cb = live.callback("run")
    live._last = time.monotonic()
    cb.on_step(None, {"step": 1, "tokens": 1, "elapsed_s": 0.1, "loss": 3.0})
    assert live._view.outputs == ()  # too soon
    cb.on_eval(None, {"step": 1, "tokens": 1, "elapsed_s": 0.1, "val_loss": 3.5})
    cb.on_step(None, {"step": 2, "tokens": 2, "elapsed_s": 0.2, "loss": 2.5})
    cb.on_end(None, {})
    output, = live._view.outputs
    figure = output["data"]["application/vnd.plotly.v1+json"]
    assert [(t["name"], list(t["x"]), list(t["y"])) for t in figure["data"]] == [("run", [1, 2], [3.0, 2.5]),
                                                                               ("run val", [1], [3.5])]
    assert figure["layout"]["yaxis"]["title"]["text"] == "loss (nats/token)"
    fallback = output["data"]["text/html"]  # for a front end that draws no plotly mime type (Colab, Kaggle)
    assert 'src="https://cdn.plot.ly/plotly-' in fallback and "Plotly.newPlot" in fallback
    assert '"x":[1,2],"y":[3.0,2.5]' in fallback.replace(" ", "") and "plotly.min.js" not in fallback


@pytest.mark.parametrize("config", [
    RNNConfig(vocab_size=30, d_embed=8, d_hidden=8, n_layers=1, dropout=0.0),
    TransformerConfig(vocab_size=30, d_model=8, n_layers=1, n_heads=2, d_ff=16, context_length=8, dropout=0.0),
])
def test_loss_by_position_reads_each_window_from_scratch(config):
    torch.manual_seed(0)
    model = build_model(config)
    stream = torch.randint(30, (8 * 5 + 3,))
    curve = inspect.loss_by_position(model, stream, 8, batch_size=2)
    assert curve.shape == (8,) and np.isfinite(curve).all()
    x = stream[:40].view(5, 8)
    y = stream[1:41].view(5, 8)
    with torch.no_grad():
        logits = model(x).logits
    expected = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(0)
    np.testing.assert_allclose(curve, expected.double().numpy(), rtol=1e-5)
    with pytest.raises(LabkitError):
        inspect.loss_by_position(model, stream[:5], 8)


def test_matched_rnn_comes_close_to_the_target():
    target = count_parameters(build_model(TransformerConfig(vocab_size=500, d_model=32, n_layers=2, n_heads=2,
                                                            d_ff=64, context_length=16)))
    for tied in (True, False):
        base = RNNConfig(vocab_size=500, d_embed=16, d_hidden=16, tie_weights=tied, n_layers=1)
        matched = experiments.matched_rnn(base, target, 500)
        assert abs(count_parameters(build_model(matched)) - target) / target < 0.02
        assert (matched.d_embed == matched.d_hidden) if tied else matched.d_embed == 16


def test_attention_change():
    a = np.zeros((1, 1, 2, 2))
    a[..., 0] = 1.0
    b = np.zeros_like(a)
    b[..., 1] = 1.0
    assert inspect.attention_change(a, a).tolist() == [[0.0]]
    assert inspect.attention_change(a, b).tolist() == [[1.0]]
    with pytest.raises(LabkitError):
        inspect.attention_change(a, np.zeros((1, 2, 2, 2)))


def test_number_task_labels_follow_the_head_noun():
    rows = tasks.number_task_rows(300, seed=3)
    assert rows == tasks.number_task_rows(300, seed=3)
    plurals = set(synthetic.NOUNS.values())
    nouns = set(synthetic.NOUNS) | plurals
    for text, label in rows:
        head = next(w for w in text.split() if w in nouns)  # the first noun is the head
        assert label == int(head in plurals), text
    assert 0.35 < np.mean([y for _, y in rows]) < 0.65
    assert any(" near " in t or " that " in t or " with " in t for t, _ in rows)  # distractors exist


def test_subset_is_seeded():
    task = tasks.TaskData(train=[([i], i % 2) for i in range(50)], val=[([1], 0)], test=[([2], 1)],
                          labels=("a", "b"), oov_rate=0.0)
    assert task.subset(None) is task and task.subset(80) is task
    a, b = task.subset(10, seed=1), task.subset(10, seed=1)
    assert len(a.train) == 10 and a.train == b.train and a.val == task.val
    assert task.subset(10, seed=2).train != a.train


def test_html_frame_escapes_the_document():
    frame = nbk.html_frame('<html><body><p class="x">a & b</p></body></html>', height=120)
    assert 'srcdoc="&lt;html&gt;' in frame.data and "&quot;x&quot;" in frame.data and "&amp; b" in frame.data
    assert "height:120px" in frame.data


def test_say_and_fmt():
    assert nbk.say(["one", "two"]).data == "- one\n- two"
    assert nbk.say(["x"], title="T").data.startswith("### T")
    assert nbk.fmt_ppl(math.log(100)) == "100.0"


def test_finetune_run_on_the_synthetic_task(no_data):
    """A tiny base on the synthetic corpus, fine-tuned on the stand-in task: a whole run."""
    from labkit.data import load_lm_data
    from labkit.runs import load_run
    from labkit.train.pretrain import pretrain

    lab = nbk.start("05", sst2=True, quiet=True)
    recipe = nbk.lm_recipe(lab, "transformer", max_steps=4, eval_every=2, log_every=2)
    data = load_lm_data(recipe.data)
    base_path = lab.run_path("base")
    pretrain(recipe.model.replace(vocab_size=data.tokenizer.vocab_size), recipe.train, recipe.data, base_path,
             data=data)
    base = load_run(base_path)
    settings = nbk.finetune_recipe(lab, max_steps=4, eval_every=2)
    task = nbk.load_finetune_task(lab, base.tokenizer, settings)
    assert task.labels == ("singular", "plural") and task.oov_rate == 0.0
    assert len(task.val) == settings.val_size
    card = nbk.finetune_run(lab, base_path, task, "ft", train_size=64)
    assert card["status"] == "finished" and card["train_size"] == 64 and card["steps"] == 2
    assert (lab.runs / "05-ft-smoke" / "model.safetensors").exists()


def test_card_table_formats_numbers():
    card = {"parameters": 1234567, "best_val_ppl": 212.468, "tokens_per_s": 3.14159, "wall_time_s": 13806.04}
    table = nbk.card_table({"a": card, "b": {"parameters": 10}})
    assert list(table.columns) == ["a", "b"]
    assert table.loc["parameters", "a"] == "1,234,567" and table.loc["best val perplexity", "a"] == "212.5"
    assert table.loc["tokens/s (training)", "a"] == "3.14" and table.loc["training time (s)", "a"] == "13,806"
    assert table.loc["test perplexity", "b"] == "None"


def test_generation_speed():
    from labkit.data import WordTokenizer

    tok = WordTokenizer.train(["the dog runs", "the cat sleeps"], specials=("<unk>", "<eos>"))
    torch.manual_seed(0)
    model = build_model(TransformerConfig(vocab_size=tok.vocab_size, d_model=8, n_layers=1, n_heads=2, d_ff=16,
                                          context_length=16, dropout=0.0))
    for cache in (True, False):
        speed, text = nbk.generation_speed(model, tok, "the dog", 20, use_cache=cache, repeats=2)
        assert speed > 0 and len(text.split()) == 20  # greedy, past the context and <eos>


def test_model_view_height_grows_with_layers_and_tokens():
    from types import SimpleNamespace

    def capture(tokens, layers, heads):
        return SimpleNamespace(tokens=["t"] * tokens, n_layers=layers, n_heads=heads)

    assert nbk.model_view_height(capture(13, 2, 4)) == 680  # 2 x (13 x 21 + 10) + 38, plus 40, plus the export buttons (36)
    assert nbk.model_view_height(capture(13, 4, 4)) > nbk.model_view_height(capture(13, 2, 4))
    assert nbk.model_view_height(capture(30, 2, 4)) > nbk.model_view_height(capture(13, 2, 4))


def test_probe_pair_trains_both_families_at_one_size_on_the_same_tokens(no_data, monkeypatch):
    monkeypatch.setitem(nbk.PROBE_SIZES, "smoke", dict(agreement=32 * 64 * 2, copy=32 * 64 * 2, items=2))
    lab = nbk.start("04", quiet=True)
    pair = nbk.probe_pair(lab, "copy", progress=False)
    assert pair.task == "copy" and set(pair.runs) == set(pair.budget) == {"lstm", "transformer"}
    cards = {family: run.card for family, run in pair.budget.items()}
    assert abs(cards["lstm"]["parameters"] - cards["transformer"]["parameters"]) / cards["transformer"]["parameters"] < 0.02
    assert cards["lstm"]["tokens_seen"] == cards["transformer"]["tokens_seen"] == 32 * 64 * 2
    assert pair.budget["lstm"].path == lab.runs / "04-copy-lstm-smoke"
    assert pair.runs["transformer"].tokenizer.encode("s3 | s3") == pair.runs["lstm"].tokenizer.encode("s3 | s3")
    assert pair.runs["lstm"].config["data"]["corpus"] == "synthetic-copy"
    again = nbk.probe_pair(lab, "copy", progress=False)  # a second time replaces the runs
    assert again.budget["lstm"].path == pair.budget["lstm"].path
    with pytest.raises(LabkitError, match="task must be one of"):
        nbk.probe_pair(lab, "sorting")


def test_house_style_reaches_a_notebooks_own_figures_and_exports_png_or_svg():
    import plotly.graph_objects as go
    import plotly.io as pio

    from labkit.notebook_display import house_style

    default, renderers = pio.templates.default, pio.renderers.default
    try:
        pio.renderers.default = "plotly_mimetype"  # what a JupyterLab or VS Code kernel starts with
        house_style()
        assert pio.renderers.default == "plotly_mimetype+labkit_html"  # the JSON and an HTML fallback
        house_style()
        assert pio.renderers.default == "plotly_mimetype+labkit_html"
        pio.renderers.default = "colab"  # plotly found a hosted front end: its own renderer has HTML
        house_style()
        assert pio.renderers.default == "colab"
        pio.renderers.default = ""  # no front end (a plain script): nothing to add to
        house_style()
        assert pio.renderers.default == ""
        fig = go.Figure(go.Scatter(y=[1, 2]))  # a figure the notebook makes itself
        layout = fig.layout.template.layout
        assert pio.templates.default == "plotly_white+labkit"
        assert layout.font.size >= 12 and layout.xaxis.tickfont.size >= 11 and layout.paper_bgcolor == "white"
        assert pio.renderers["notebook"].config["toImageButtonOptions"] == {"format": "png", "scale": 2,
                                                                            "filename": "labkit-chart"}
        house_style("svg")
        assert pio.renderers["jupyterlab"].config["toImageButtonOptions"]["format"] == "svg"
    finally:
        pio.templates.default, pio.renderers.default = default, renderers
        for name in ("plotly_mimetype", "jupyterlab", "notebook", "notebook_connected", "vscode", "labkit_html"):
            pio.renderers[name].config = {}
