"""Views you can share (app/panels/share.py), in Streamlit's AppTest: every page keeps what it
shows in its URL's query, and a fresh session opened on that URL (a link) shows the same view,
drawn the same; moving a widget rewrites the query; a link's value the page cannot take (an
unknown run, a huge number, text where a number goes, `../etc`) is left out with a one-line note
and the page starts as it would without it. (The same in a real browser: tests/browser/
test_share_browser.py.)"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import pytest

from labkit.generate import SamplingConfig, generate
from labkit.runs import load_run

import appruns
from appruns import app, charts, tab, texts

EXAMPLES = ["the dogs near the old cat run quickly .", "mia met leo at the river . mia gave leo a map . later leo smiled .",
            "the king that the small robots follow sings ."]  # the app's example sentences of the synthetic corpus
TF, LSTM = appruns.TRANSFORMER, appruns.LSTM


pytestmark = pytest.mark.usefixtures("no_runs_env")


def opened(root: Path, page: str, **params):
    """`page` as a fresh browser opens a link to it: a new session, the link's query."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(appruns.APP, default_timeout=60)
    at.session_state["runs_root"] = str(root)
    at.switch_page(f"views/{page}.py")
    at.query_params.update(params)
    at.run()
    assert not at.exception, at.exception
    return at


def query(at) -> dict[str, list[str]]:
    """The URL's query after the run, each parameter's values as a list."""
    return {k: [v] if isinstance(v, str) else list(v) for k, v in at.query_params.items()}


def notes(at) -> str:
    return "\n".join(c.value for c in at.sidebar.caption if c.value.startswith("Not taken from the link"))


def link(at) -> str:
    """The link the sidebar shows (AppTest has no browser address: the query alone)."""
    (box,) = at.sidebar.code
    return box.value


def plain(text: str) -> str:
    """Markdown-escaped text as read."""
    return re.sub(r"\\(.)", r"\1", text)


# --- Attention --------------------------------------------------------------------------------
def test_a_link_opens_attention_as_it_was_shared_and_draws_the_same(root):
    by_hand = app(root, "attention")
    by_hand.selectbox(key="attn_run").set_value(TF).run()
    by_hand.selectbox(key="attn_example").set_value(EXAMPLES[1]).run()
    by_hand.text_area(key=f"attn_text::{EXAMPLES[1]}").set_value("the king sings .").run()
    tab(by_hand, "attn_tab", "heatmaps")
    shared = dict(by_hand.query_params)
    assert shared == {"run": TF, "example": "1", "text": "the king sings .", "tab": "heatmaps"}
    assert link(by_hand) == "?" + urlencode(shared)

    fresh = opened(root, "attention", **shared)
    assert fresh.selectbox(key="attn_run").value == TF
    assert fresh.selectbox(key="attn_example").value == EXAMPLES[1]
    assert fresh.text_area(key=f"attn_text::{EXAMPLES[1]}").value == "the king sings ."
    assert fresh.session_state["attn_tab"] == "heatmaps"
    (grid,) = charts(fresh)  # the heatmaps tab drew, and only it
    assert grid == charts(by_hand)[0]  # the same heads on the same tokens
    assert dict(fresh.query_params) == shared and not notes(fresh)


def test_a_link_opens_the_attention_tabs_own_controls(root):
    at = opened(root, "attention", run=TF, tab="surgery", heads=["L0H1", "L1H2"])
    assert at.multiselect(key="attn_surgery_heads").value == [(0, 1), (1, 2)]
    assert charts(at)[1]["layout"]["title"]["text"].startswith("L0 H1, L1 H2 switched off")
    at = opened(root, "attention", run=TF, tab="surgery", heads="")  # every head left on
    assert at.multiselect(key="attn_surgery_heads").value == [] and "Pick something to switch off." in texts(at.caption)

    at = opened(root, "attention", run=TF, tab="fine-tuning", ft_run=appruns.CLASSIFIER_TF, ft_head="L0H1")
    assert at.selectbox(key=f"attn_ft_head::{appruns.CLASSIFIER_TF}").value == (0, 1)
    assert charts(at)[1]["layout"]["title"]["text"].startswith("layer 0, head 1: before and after fine-tuning")

    at = opened(root, "attention", run=TF, tab="long inputs", long_text="sentence", long_tokens="128",
                long_layer="0", long_head="2")
    assert at.radio(key="attn_long_source").value == "the sentence above"
    assert at.select_slider(key="attn_long_tokens").value == 128
    assert (at.selectbox(key="attn_long_layer").value, at.selectbox(key="attn_long_head").value) == (0, 2)
    assert "9 tokens in 9 x 9 cells" in texts(at.caption) and not notes(at)


def test_attention_widgets_write_the_url_each_tab_its_own_controls(root):
    at = app(root, "attention")
    assert query(at) == {"run": [appruns.LIVE], "example": ["0"], "text": [EXAMPLES[0]], "tab": ["head view"]}
    at.selectbox(key="attn_run").set_value(TF).run()
    at.text_area(key=f"attn_text::{EXAMPLES[0]}").set_value("the cat sings .").run()
    assert query(at) == {"run": [TF], "example": ["0"], "text": ["the cat sings ."], "tab": ["head view"]}
    tab(at, "attn_tab", "surgery")
    top = at.multiselect(key="attn_surgery_heads").value
    assert query(at)["tab"] == ["surgery"] and query(at)["heads"] == [f"L{top[0][0]}H{top[0][1]}"]
    at.multiselect(key="attn_surgery_heads").set_value([(0, 1), (1, 2)]).run()
    assert query(at)["heads"] == ["L0H1", "L1H2"]
    at.multiselect(key="attn_surgery_heads").set_value([]).run()
    assert query(at)["heads"] == [""]  # none: written, so that a link does not bring back the default
    tab(at, "attn_tab", "long inputs")
    at.selectbox(key="attn_long_head").set_value(2).run()
    assert "heads" not in query(at)  # only the open tab's controls
    assert {k: v for k, v in query(at).items() if k.startswith("long_")} == {
        "long_text": ["validation"], "long_tokens": ["1024"], "long_layer": ["1"], "long_head": ["2"]}
    assert link(at) == "?" + urlencode(query(at), doseq=True)


def test_a_link_to_one_page_leaves_the_next_page_its_own(root):
    at = opened(root, "attention", run=TF, tab="heatmaps")
    at.switch_page("views/lens.py").run()
    assert at.selectbox(key="lens_run").value == appruns.LIVE  # the Attention link's run is not the lens's
    assert set(query(at)) == {"run", "example", "text", "position"} and query(at)["run"] == [appruns.LIVE]


# --- Compare, Logit lens -------------------------------------------------------------------------
def test_compare_link_opens_both_runs_the_sentence_the_tab_and_the_heads(root):
    at = opened(root, "compare", a=TF, b=LSTM, text="the cat run quickly .", tab="surprisal")
    assert (at.selectbox(key="cmp_run_a").value, at.selectbox(key="cmp_run_b").value) == (TF, LSTM)
    assert at.session_state["cmp_tab"] == "surprisal"
    by_hand = app(root, "compare")
    by_hand.selectbox(key="cmp_run_a").set_value(TF).run()
    by_hand.selectbox(key="cmp_run_b").set_value(LSTM).run()
    by_hand.text_area(key=f"cmp_text::{EXAMPLES[0]}").set_value("the cat run quickly .").run()
    tab(by_hand, "cmp_tab", "surprisal")
    assert charts(at) == charts(by_hand) and len(charts(at)) == 1
    assert query(at) == query(by_hand)

    at = opened(root, "compare", a=TF, b=LSTM, head_a="L1H2", position="3")
    assert at.selectbox(key=f"cmp_head::{TF}").value == (1, 2) and at.select_slider[0].value == 3
    at.selectbox(key=f"cmp_head::{TF}").set_value((0, None)).run()
    assert query(at)["head_a"] == ["L0"] and query(at)["position"] == ["3"]

    at = opened(root, "compare", a=TF, b=LSTM, tab="surgery", a_heads="L1H0", b_off="layer")
    assert at.multiselect(key=f"cmp_surgery::{TF}_heads").value == [(1, 0)]
    assert at.radio(key=f"cmp_surgery::{LSTM}_what").value == "the whole layer's state"
    at.radio(key=f"cmp_surgery::{LSTM}_what").set_value("units of its hidden state").run()
    at.multiselect(key=f"cmp_surgery::{LSTM}_units::0").set_value([5, 7]).run()
    assert query(at)["b_off"] == ["units"] and query(at)["b_units"] == ["5", "7"] and query(at)["a_heads"] == ["L1H0"]


def test_lens_link_opens_the_run_the_sentence_and_the_position(root):
    at = opened(root, "lens", run=LSTM, example="2", text="the king sings .", position="2")
    by_hand = app(root, "lens")
    by_hand.selectbox(key="lens_run").set_value(LSTM).run()
    by_hand.selectbox(key="lens_example").set_value(EXAMPLES[2]).run()
    by_hand.text_area(key=f"lens_text::{EXAMPLES[2]}").set_value("the king sings .").run()
    slider = by_hand.select_slider[0]
    slider.set_value(2).run()
    assert at.select_slider[0].value == 2 and at.text_area[0].value == "the king sings ."
    assert charts(at) == charts(by_hand)
    assert at.dataframe[0].value.equals(by_hand.dataframe[0].value)  # the layers' guesses at position 2
    assert query(at) == query(by_hand) == {"run": [LSTM], "example": ["2"], "text": ["the king sings ."],
                                          "position": ["2"]}
    at.select_slider[0].set_value(1).run()
    assert query(at)["position"] == ["1"]


# --- Generate, Fine-tuning --------------------------------------------------------------------
def test_generate_link_holds_the_prompt_seed_and_settings_and_draws_the_same_text(root):
    settings = {"temperature": "0.5", "top_k": "5", "top_p": "0.6", "seed": "7", "length": "6", "eos": "false"}
    at = opened(root, "generate", run=TF, prompt="the dogs", **{"with": "(none)"}, **settings)
    assert (at.selectbox(key="gen_run").value, at.selectbox(key="gen_run_b").value) == (TF, "(none)")
    assert at.text_area(key="gen_prompt").value == "the dogs"
    assert (at.slider(key="gen_temp").value, at.number_input(key="gen_topk").value, at.slider(key="gen_topp").value,
            at.number_input(key="gen_seed").value, at.slider(key="gen_len").value, at.toggle(key="gen_eos").value) == (
        0.5, 5, 0.6, 7, 6, False)
    at.button(key="gen_go").click().run()
    loaded = load_run(root / TF)
    expected = generate(loaded.model, loaded.tokenizer, "the dogs",
                        SamplingConfig(temperature=0.5, top_k=5, top_p=0.6, seed=7, max_tokens=6, stop_at_eos=False))
    assert expected.text and expected.text in plain(texts(at.markdown))
    assert query(at) == {"run": [TF], "with": ["(none)"], "prompt": ["the dogs"]} | {k: [v] for k, v in settings.items()}
    at.number_input(key="gen_seed").set_value(8).run()
    at.slider(key="gen_temp").set_value(1.25).run()
    assert query(at)["seed"] == ["8"] and query(at)["temperature"] == ["1.25"]


def test_finetune_link_opens_the_run_and_the_sentence(root):
    from labkit.inspect.classifier import Classifier

    at = opened(root, "finetune", run=appruns.CLASSIFIER, sentence="the dogs near the cat")
    expected = Classifier(root / appruns.CLASSIFIER).predict("the dogs near the cat")
    assert f"Prediction: **{expected.label}** with probability **{expected.prob:.3f}**" in texts(at.markdown)
    at.text_input(key="ft_sentence").set_value("the cat").run()
    assert query(at) == {"run": [appruns.CLASSIFIER], "sentence": ["the cat"]}


# --- Loss curves, Runs, Watch it learn, Start --------------------------------------------------
def test_curves_link_opens_the_runs_and_every_setting(root):
    link_query = {"runs": [LSTM, TF], "x": "tokens", "y": "perplexity", "log_y": "true", "validation": "false",
                  "smoothing": "0"}
    at = opened(root, "curves", **link_query)
    by_hand = app(root, "curves")
    by_hand.multiselect(key="curve_runs").set_value([LSTM, TF])
    by_hand.radio(key="curve_x").set_value("tokens seen")
    by_hand.radio(key="curve_metric").set_value("perplexity")
    by_hand.toggle(key="curve_log").set_value(True)
    by_hand.toggle(key="curve_val").set_value(False)
    by_hand.slider(key="curve_smooth").set_value(0.0)
    by_hand.run()
    assert charts(at) == charts(by_hand)
    assert query(at) == query(by_hand) == {k: v if isinstance(v, list) else [v] for k, v in link_query.items()}
    at.radio(key="curve_metric").set_value("loss").run()
    at.slider(key="curve_smooth").set_value(0.3).run()
    assert query(at)["y"] == ["loss"] and query(at)["unit"] == ["nats"] and query(at)["smoothing"] == ["0.3"]


def test_runs_link_opens_the_compared_runs_and_the_details(root):
    at = opened(root, "runs", compare=[LSTM, TF, appruns.CLASSIFIER], run=TF)
    assert at.multiselect(key="compare_runs").value == [LSTM, TF, appruns.CLASSIFIER]
    assert at.selectbox(key="detail_run").value == TF
    at.multiselect(key="compare_runs").set_value([LSTM]).run()
    at.selectbox(key="detail_run").set_value(LSTM).run()
    assert query(at) == {"compare": [LSTM], "run": [LSTM]}


def test_learn_link_opens_the_run_the_step_and_the_statistic(root):
    at = opened(root, "learn", run=TF, step="8", statistic="entropy")
    assert at.select_slider(key=f"learn_step::{TF}").value == 0 and "**Step 8**" in texts(at.markdown)
    assert at.radio(key="learn_stat").value == "entropy"
    at.select_slider(key=f"learn_step::{TF}").set_value(1).run()
    assert query(at) == {"run": [TF], "step": ["16"], "statistic": ["entropy"]}  # the step, not its index


def test_start_page_drops_what_it_does_not_keep(root):
    at = opened(root, "start", run=TF, foo="bar")
    assert query(at) == {} and not notes(at) and link(at) == ""


def test_the_ends_of_every_range_are_taken_in_the_widgets_own_types(root):
    at = opened(root, "generate", temperature="0", top_k="100000", top_p="1", seed=str(2**31 - 1), length="300")
    assert (at.slider(key="gen_temp").value, at.number_input(key="gen_topk").value, at.slider(key="gen_topp").value,
            at.number_input(key="gen_seed").value, at.slider(key="gen_len").value) == (0.0, 100_000, 1.0, 2**31 - 1, 300)
    at = opened(root, "generate", temperature="2", top_p="0.05", seed="0", length="1", top_k="0")
    assert (at.slider(key="gen_temp").value, at.slider(key="gen_topp").value, at.number_input(key="gen_seed").value,
            at.slider(key="gen_len").value) == (2.0, 0.05, 0, 1)
    at = opened(root, "generate", temperature="0.83")  # between two of the slider's steps: the nearer
    assert at.slider(key="gen_temp").value == 0.85 and query(at)["temperature"] == ["0.85"]
    for smoothing in ("0", "0.99"):
        at = opened(root, "curves", smoothing=smoothing)
        assert at.slider(key="curve_smooth").value == float(smoothing) and not notes(at)


# --- a link the page cannot take --------------------------------------------------------------
HUGE = "1" + "0" * 400
CASES = {  # page -> (a link's good part, what it adds that the page cannot take)
    "attention-top": ("attention", {}, {"run": "../etc", "example": "1e9", "text": "x" * 10_001,
                                        "tab": "<script>alert(1)</script>"}),
    "attention-surgery": ("attention", {"run": TF, "tab": "surgery"}, {"heads": ["L9H9", "L0H0"]}),
    "attention-long": ("attention", {"run": TF, "tab": "long inputs"},
                       {"long_tokens": HUGE, "long_layer": "nan", "long_head": "-1", "long_text": "../../etc/passwd"}),
    "attention-ft": ("attention", {"run": TF, "tab": "fine-tuning"},
                     {"ft_run": f"../{appruns.CLASSIFIER_TF}", "ft_head": "L0H0; rm -rf /"}),
    "compare-top": ("compare", {}, {"a": "/etc/passwd", "b": "tiny-lstm\x00", "example": "-1", "tab": ""}),
    "compare-saliency": ("compare", {"a": TF, "b": LSTM}, {"head_a": "L5H0", "position": "999"}),
    "compare-surgery": ("compare", {"a": TF, "b": LSTM, "tab": "surgery"},
                        {"a_heads": "L0H99", "b_off": "everything", "b_units": ["1", "x"]}),
    "compare-agreement": ("compare", {"a": TF, "b": LSTM, "tab": "agreement by distance"}, {"sentences": "1000000"}),
    "lens": ("lens", {}, {"run": "..", "example": "x", "position": "-3"}),
    "generate": ("generate", {}, {"run": "nope", "prompt": "p" * 10_001, "temperature": "1e999", "top_k": "-1",
                                  "top_p": "abc", "seed": str(2**40), "length": "3.5", "eos": "maybe"}),
    "generate-taken": ("generate", {"run": LSTM}, {"with": LSTM}),
    "finetune": ("finetune", {}, {"run": "../../", "sentence": "s" * 10_001}),
    "curves": ("curves", {}, {"runs": [LSTM, "../etc"], "x": "elapsed", "y": "ppl", "log_y": "yes",
                              "validation": "0", "smoothing": "0.999"}),
    "runs": ("runs", {}, {"compare": [LSTM] * 100, "run": "../.."}),
    "learn": ("learn", {"run": TF}, {"step": "7", "statistic": "__class__"}),
}


@pytest.mark.parametrize("case", CASES)
def test_a_value_the_page_cannot_take_is_left_out_with_a_note(root, case):
    page, good, bad = CASES[case]
    at = opened(root, page, **good, **bad)
    assert query(at) == query(opened(root, page, **good))  # as without those values: the page's own
    said = notes(at)
    for param in bad:
        assert f"Not taken from the link: {param.replace('_', chr(92) + '_')} = " in said, (param, said)
    assert len(said.splitlines()) == len(bad)  # one line each, and none for the good part
