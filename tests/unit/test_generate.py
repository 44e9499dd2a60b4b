"""Unit tests for sampling and decoding (tiny random models, no data files)."""

import math

import pytest
import torch

from labkit.errors import LabkitError
from labkit.generate import Candidate, SamplingConfig, filter_logits, generate, stream
from labkit.models import RNNConfig, TransformerConfig, build_model

WORDS = ["<unk>", "<pad>", "<eos>"] + [f"w{i}" for i in range(27)] + ["the", "cat", "sat"]


class TinyTokenizer:
    """Stand-in with the tokenizer interface: one id per whitespace word."""

    kind = "whitespace"

    def __init__(self) -> None:
        self.stoi = {w: i for i, w in enumerate(WORDS)}
        self.vocab_size, self.unk_id, self.eos_id = len(WORDS), 0, 2

    def tokenize(self, text: str) -> list[str]:
        return text.split()

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, self.unk_id) for w in text.split()]

    def decode(self, ids) -> str:
        return " ".join(self.id_to_token(ids))

    def id_to_token(self, ids) -> list[str]:
        return [WORDS[int(i)] for i in ids]


V = len(WORDS)
TOK = TinyTokenizer()
GREEDY = dict(temperature=0.0, stop_at_eos=False)


def transformer(context_length: int = 16):
    torch.manual_seed(0)
    model = build_model(TransformerConfig(vocab_size=V, d_model=32, n_layers=2, n_heads=4,
                                          d_ff=64, context_length=context_length, dropout=0.0))
    with torch.no_grad():  # bigger weights than the init, so greedy text does not collapse
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return model


def rnn():
    torch.manual_seed(0)
    return build_model(RNNConfig(vocab_size=V, cell="lstm", d_embed=16, d_hidden=16, n_layers=2,
                                 dropout=0.0))


def manual_greedy(model, prompt_ids, n, context=None):
    """The reference: recompute the whole (windowed) prefix and take the argmax each step, <unk>
    left out."""
    seq = list(prompt_ids)
    with torch.no_grad():
        for _ in range(n):
            window = seq if context is None else seq[-context:]
            logits = model(torch.tensor([window])).logits[0, -1]
            logits[TOK.unk_id] = float("-inf")
            seq.append(int(logits.argmax()))
    return seq[len(prompt_ids):]


def ids(gen):
    return [t.id for t in gen.tokens]


PROMPT = "the cat sat w1 w2 w3"


def test_same_seed_same_text_different_seed_differs():
    model = transformer()
    cfg = lambda seed: SamplingConfig(max_tokens=20, seed=seed, stop_at_eos=False)  # noqa: E731
    a, b = generate(model, TOK, PROMPT, cfg(1)), generate(model, TOK, PROMPT, cfg(1))
    assert ids(a) == ids(b) and a.text == b.text and len(a.tokens) == 20
    assert ids(generate(model, TOK, PROMPT, cfg(2))) != ids(a)


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_matches_manual_loop_past_the_context(use_cache):
    model = transformer(context_length=16).eval()
    gen = generate(model, TOK, PROMPT, SamplingConfig(max_tokens=40, **GREEDY), use_cache=use_cache)
    expected = manual_greedy(model, TOK.encode(PROMPT), 40, context=16)
    assert ids(gen) == expected
    assert len(set(expected)) > 3  # the text does not collapse to one token: a real check


def test_kv_cache_and_full_recompute_agree_with_long_prompt():
    model = transformer(context_length=16)
    prompt = " ".join(f"w{i % 27}" for i in range(30))
    cfg = SamplingConfig(max_tokens=40, **GREEDY)
    fast, slow = (generate(model, TOK, prompt, cfg, use_cache=c) for c in (True, False))
    assert ids(fast) == ids(slow) == manual_greedy(model, TOK.encode(prompt)[-16:], 40, 16)
    assert fast.prompt_ids == TOK.encode(prompt)[-16:]
    assert any("cut to the last 16 tokens" in n for n in fast.notices)


def test_top_k_1_is_greedy():
    model = transformer()
    greedy = generate(model, TOK, PROMPT, SamplingConfig(max_tokens=15, **GREEDY))
    top1 = generate(model, TOK, PROMPT, SamplingConfig(max_tokens=15, top_k=1, seed=3,
                                                       stop_at_eos=False))
    assert ids(top1) == ids(greedy)
    assert all(t.prob == pytest.approx(1.0) for t in top1.tokens)


@pytest.mark.parametrize("use_cache", [True, False])
def test_rnn_generation_carries_state(use_cache):
    model = rnn()
    gen = generate(model, TOK, PROMPT, SamplingConfig(max_tokens=25, **GREEDY), use_cache=use_cache)
    assert ids(gen) == manual_greedy(model.eval(), TOK.encode(PROMPT), 25)
    sampled = generate(model, TOK, "", SamplingConfig(max_tokens=10, seed=0, stop_at_eos=False))
    assert len(sampled.tokens) == 10 and sampled.text == TOK.decode(ids(sampled))


def test_filter_logits_top_k_and_nucleus():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    kept = lambda **kw: torch.isfinite(filter_logits(logits, **kw)).tolist()  # noqa: E731
    assert kept(top_p=0.8) == [True, True, False, False]
    assert kept(top_p=0.81) == [True, True, True, False]
    assert kept(top_p=0.4) == kept(top_p=1e-9) == [True, False, False, False]
    assert kept(top_p=1.0) == kept(top_k=10) == [True] * 4
    assert kept(top_k=2) == [True, True, False, False]
    # Ties still keep exactly k; kept logits are unchanged.
    tied = filter_logits(torch.zeros(5), top_k=3)
    assert torch.isfinite(tied).sum() == 3 and (tied[torch.isfinite(tied)] == 0).all()
    # Batches are filtered row by row.
    batch = torch.stack([logits, logits.flip(0)])
    out = torch.isfinite(filter_logits(batch, top_k=3, top_p=0.8))
    assert out.tolist() == [[True, True, False, False], [False, False, True, True]]


def test_probabilities_and_entropy_of_a_model_whose_distribution_is_set_by_hand():
    """A model that says p = (0.4, 0.3, 0.2, 0.1) for "the cat sat w0" at every step (its output
    weights zero, its bias the log-probabilities), sampled at temperature 2 with top-p 0.8:
    every number a token reports is worked out here by hand."""
    model = rnn()
    words = ["the", "cat", "sat", "w0"]
    p = [0.4, 0.3, 0.2, 0.1]
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-1e4)  # every other word: probability 0 (e^-10000)
        for w, q in zip(words, p):
            model.head.bias[WORDS.index(w)] = math.log(q)
    entropy = -(0.4 * math.log(0.4) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))  # 1.2799
    # temperature 2: p^(1/2), renormalised: 0.3254, 0.2818, 0.2301, 0.1627; top-p 0.8 keeps the first
    # three (0.3254 + 0.2818 = 0.607 < 0.8 <= 0.837), renormalised over them
    root = [math.sqrt(q) for q in p]
    kept = root[:3]
    sampled = {w: r / sum(kept) for w, r in zip(words, kept)}  # 0.3887, 0.3366, 0.2748
    gen = generate(model, TOK, PROMPT, SamplingConfig(max_tokens=40, temperature=2.0, top_p=0.8, seed=0,
                                                      stop_at_eos=False))
    assert len(gen.tokens) == 40 and {t.text for t in gen.tokens} == {"the", "cat", "sat"}  # never w0
    for t in gen.tokens:
        assert t.entropy == pytest.approx(entropy, abs=1e-5)
        assert t.model_prob == pytest.approx(p[words.index(t.text)], abs=1e-6)
        assert t.prob == pytest.approx(sampled[t.text], abs=1e-6)
    assert sampled == pytest.approx({"the": 0.3887, "cat": 0.3366, "sat": 0.2748}, abs=1e-4)
    assert gen.tokens_per_second > 0


def test_empty_prompt_starts_from_eos():
    for prompt in ("", "   "):
        gen = generate(rnn(), TOK, prompt, SamplingConfig(max_tokens=3, seed=0))
        assert gen.prompt_ids == [TOK.eos_id]
        assert any("empty prompt" in n for n in gen.notices)


def test_out_of_vocabulary_words_are_named():
    s = stream(transformer(), TOK, "the zebra cat <unk> quokka zebra", SamplingConfig(max_tokens=1))
    assert s.notices == ["mapped to <unk>: zebra, quokka"]  # ready before iterating
    assert stream(rnn(), TOK, "the <unk> cat", SamplingConfig()).notices == []


def test_stops_at_eos():
    model = rnn()
    with torch.no_grad():
        model.head.bias[TOK.eos_id] = 100.0  # eos overwhelmingly likely
    gen = generate(model, TOK, PROMPT, SamplingConfig(max_tokens=10, seed=0))
    assert gen.tokens == [] and gen.stop_reason == "eos" and gen.text == ""
    gen = generate(model, TOK, PROMPT, SamplingConfig(max_tokens=4, seed=0, stop_at_eos=False))
    assert ids(gen) == [TOK.eos_id] * 4 and gen.stop_reason == "max_tokens"


def test_streaming_leaves_no_global_state_behind():
    model = transformer().train()
    s = stream(model, TOK, PROMPT, SamplingConfig(max_tokens=5, seed=0))
    next(s)
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    rest = list(s)
    assert len(rest) <= 4 and model.training  # training mode restored at the end
    assert list(stream(model, TOK, PROMPT, SamplingConfig(max_tokens=0))) == []


@pytest.mark.parametrize("kw", [
    dict(temperature=-0.5), dict(temperature=float("nan")), dict(temperature=float("inf")),
    dict(top_p=0.0), dict(top_p=1.5), dict(top_p=float("nan")), dict(top_k=-1), dict(top_k=2.5),
    dict(max_tokens=-1), dict(max_tokens=10**6), dict(max_tokens=True), dict(seed="x"),
])
def test_bad_configs_raise(kw):
    with pytest.raises(LabkitError):
        SamplingConfig(**kw)


def test_top_p_zero_points_to_greedy():
    with pytest.raises(LabkitError, match="temperature 0"):
        SamplingConfig(top_p=0)


def test_tokenizer_model_mismatch_is_a_user_error():
    model = build_model(RNNConfig(vocab_size=V + 1, d_embed=8, d_hidden=8, n_layers=1))
    with pytest.raises(LabkitError, match="same run"):
        generate(model, TOK, PROMPT, SamplingConfig(max_tokens=1))


def test_real_word_tokenizer():
    tokenizers = pytest.importorskip("labkit.data.tokenizers")
    tok = tokenizers.WordTokenizer.train(["the cat sat on the mat .", "a dog ran ."],
                                         split="basic_english")
    model = build_model(RNNConfig(vocab_size=tok.vocab_size, d_embed=8, d_hidden=8, n_layers=1))
    gen = generate(model, tok, "The Zebra sat.", SamplingConfig(max_tokens=5, seed=0))
    assert gen.notices == ["mapped to <unk>: zebra"]
    assert len(gen.tokens) <= 5


# --- what each step reports, and <unk> -------------------------------------------------------------
def fixed(probs: dict[int, float]) -> torch.nn.Module:
    """A model whose next-token distribution is `probs` (id -> p) whatever it reads: the output
    layer's weights are zero and its bias is log p (a probability of 0 gets -1e4: exp gives 0)."""
    model = rnn()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-1e4)
        for i, p in probs.items():
            model.head.bias[i] = math.log(p)
    return model


W0 = TOK.stoi["w0"]  # four plain words: ids W0 .. W0 + 3


def test_entropy_is_minus_sum_p_log_p_of_a_distribution_known_by_hand():
    # p = 1/2, 1/4, 1/8, 1/8: H = 1/2 ln 2 + 1/4 * 2 ln 2 + 2 * 1/8 * 3 ln 2 = 1.75 ln 2 nats
    model = fixed({W0: 0.5, W0 + 1: 0.25, W0 + 2: 0.125, W0 + 3: 0.125})
    gen = generate(model, TOK, PROMPT, SamplingConfig(max_tokens=3, seed=0, stop_at_eos=False))
    assert [t.entropy for t in gen.tokens] == [pytest.approx(1.75 * math.log(2), abs=1e-5)] * 3
    one = generate(fixed({W0: 1.0}), TOK, PROMPT, SamplingConfig(max_tokens=1, seed=0))
    assert one.tokens[0].entropy == pytest.approx(0.0, abs=1e-6)


def test_each_step_reports_its_top_tokens_under_the_model_and_as_sampled():
    probs = {W0: 0.5, W0 + 1: 0.25, W0 + 2: 0.15, W0 + 3: 0.1}
    model = fixed(probs)
    words = ["w0", "w1", "w2", "w3"]

    def sampled(**kw) -> list[float]:
        step = generate(model, TOK, PROMPT, SamplingConfig(max_tokens=1, seed=0, show_top=5, **kw)).tokens[0]
        assert [c.text for c in step.top[:4]] == words  # the model's four likeliest, best first
        assert [c.model_prob for c in step.top[:4]] == pytest.approx([0.5, 0.25, 0.15, 0.1], abs=1e-6)
        assert step.prob == pytest.approx(next(c.sampling_prob for c in step.top if c.id == step.id))
        return [c.sampling_prob for c in step.top[:4]]

    assert sampled() == pytest.approx([0.5, 0.25, 0.15, 0.1], abs=1e-6)  # temperature 1, nothing cut
    # top-k 3: the fourth is cut, the rest renormalised by 0.9
    assert sampled(top_k=3) == pytest.approx([0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.0], abs=1e-6)
    # temperature 0.5 squares p (then normalised: 0.25, 0.0625, 0.0225, 0.01 over 0.345); top-p 0.9
    # keeps the first two (0.7246 + 0.1812 = 0.9058 >= 0.9), renormalised: 0.25 / 0.3125, 0.0625 / 0.3125
    assert sampled(temperature=0.5, top_p=0.9) == pytest.approx([0.8, 0.2, 0.0, 0.0], abs=1e-6)
    assert sampled(temperature=0) == [1.0, 0.0, 0.0, 0.0]
    assert generate(model, TOK, PROMPT, SamplingConfig(max_tokens=1, show_top=0)).tokens[0].top == []
    assert isinstance(generate(model, TOK, PROMPT, SamplingConfig(max_tokens=1)).tokens[0].top[0], Candidate)


def test_unk_is_never_generated_unless_allowed():
    model = fixed({TOK.unk_id: 0.9, W0: 0.06, W0 + 1: 0.04})
    sampled = generate(model, TOK, PROMPT, SamplingConfig(max_tokens=200, seed=0, stop_at_eos=False))
    assert TOK.unk_id not in ids(sampled) and set(ids(sampled)) == {W0, W0 + 1}
    step = sampled.tokens[0]
    assert (step.top[0].id, step.top[0].model_prob, step.top[0].sampling_prob) == (TOK.unk_id, pytest.approx(0.9), 0.0)
    assert step.top[1].sampling_prob == pytest.approx(0.6)  # 0.06 / (0.06 + 0.04)
    greedy = generate(model, TOK, PROMPT, SamplingConfig(max_tokens=3, **GREEDY))
    assert ids(greedy) == [W0] * 3
    allowed = generate(model, TOK, PROMPT, SamplingConfig(max_tokens=3, allow_unk=True, **GREEDY))
    assert ids(allowed) == [TOK.unk_id] * 3
    with pytest.raises(LabkitError, match="allow_unk"):
        SamplingConfig(allow_unk="yes")


def test_the_command_line_takes_allow_unk():
    from labkit.cli import build_parser
    from labkit.cli.pretrain import overrides

    parser = build_parser()
    for argv, expected in ((["generate", "r"], False), (["generate", "r", "--allow-unk"], True)):
        args = parser.parse_args(argv)
        assert SamplingConfig(**overrides(args, SamplingConfig, {})).allow_unk is expected
    generate_help = next(a for a in parser._subparsers._group_actions[0].choices["generate"]._actions
                         if "--allow-unk" in a.option_strings).help
    assert "<unk>" in generate_help
