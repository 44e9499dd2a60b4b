"""labkit.inspect's analyses checked against hand-computed cases: induction scores on a Transformer
whose attention is set by hand, saliency where the gradient is known in closed form, occlusion,
surprisal, loss by position and by frequency against brute-force loops, attention change, and the
matched-budget comparison. Unit tests: tiny models, no data files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from labkit.data import DataConfig, WordTokenizer
from labkit.errors import LabkitError
from labkit.experiments import compare_budget, match_budgets, matched_rnn, parameter_count
from labkit.inspect import (
    attention_change,
    capture_attention,
    compare_surprisal,
    frequency_buckets,
    gradient_x_input,
    head_stats,
    induction_score,
    induction_scores,
    loss_by_position,
    occlusion,
    perplexity_by_frequency,
    repeated_sequences,
    saliency,
    surprisal_html,
    token_counts,
    token_surprisal,
)
from labkit.inspect import compare_plots as cp
from labkit.inspect.plots import head_stats_figure
from labkit.models import (
    ClassifierConfig,
    RNNConfig,
    SequenceClassifier,
    TransformerConfig,
    build_model,
    run_with_cache,
)
from labkit.train.trainer import TrainConfig

TINY_TRANSFORMER = TransformerConfig(vocab_size=30, d_model=16, n_layers=2, n_heads=2, d_ff=32, context_length=16,
                                     dropout=0.0, tie_weights=False)
TINY_LSTM = RNNConfig(vocab_size=30, d_embed=8, d_hidden=8, n_layers=1, dropout=0.0)


def seeded(config, seed=0):
    torch.manual_seed(seed)
    return build_model(config).eval()


@pytest.fixture(scope="module")
def tok():
    return WordTokenizer.train(["the dog near the cats runs fast .", "a cat sees the birds ."],
                               specials=("<unk>", "<eos>"))


# --- induction scores -------------------------------------------------------------------------
def test_induction_scores_of_hand_made_patterns():
    length, prefix = 3, 1
    T = prefix + 2 * length
    perfect = np.zeros((1, 2, T, T))
    for q in range(T):
        perfect[0, 0, q, max(0, q - length + 1) if q >= prefix + length else q] = 1.0
    perfect[0, 1] = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]  # uniform over the visible keys
    scores = induction_scores(perfect, length, prefix)
    assert scores.shape == (1, 2) and scores[0, 0] == 1.0
    assert scores[0, 1] == pytest.approx(np.mean([1 / (q + 1) for q in range(prefix + length, T)]))
    with pytest.raises(LabkitError):
        induction_scores(perfect, length + 1, prefix)
    middle = np.zeros((2, 1, 1, T + 1, T + 1))  # a separator between the repeats: keys shift by one
    for q in range(prefix + length + 1, T + 1):
        middle[:, 0, 0, q, q - length] = 1.0
    assert induction_scores(middle, length, prefix, middle=1).tolist() == [[1.0]]


def test_repeated_sequences_repeat_distinct_tokens_after_the_prefix():
    ids = repeated_sequences(range(5, 25), 6, batch=4, seed=1, prefix=[0])
    assert ids.shape == (4, 13) and (ids[:, 0] == 0).all()
    assert torch.equal(ids[:, 1:7], ids[:, 7:]) and all(len(set(row[1:7].tolist())) == 6 for row in ids)
    assert torch.equal(ids, repeated_sequences(range(5, 25), 6, batch=4, seed=1, prefix=[0]))
    with pytest.raises(LabkitError):
        repeated_sequences(range(3), 4)
    separated = repeated_sequences(range(5, 25), 6, batch=2, prefix=[0], middle=[1])
    assert separated.shape == (2, 14) and (separated[:, 7] == 1).all() and torch.equal(separated[:, 1:7], separated[:, 8:])


def hand_set_transformer(length: int, sharpness: float) -> torch.nn.Module:
    """One layer, one head, d_model = context = 16. Token embeddings are zero and position t's
    embedding is the one-hot e_t, so LayerNorm turns it into alpha e_t - beta 1. The query maps
    e_t to sharpness * alpha * e_(t - length + 1) (the bias cancels the -beta 1 part) and the key
    is the identity, so the score of key s is sharpness * alpha * (alpha [s = t - length + 1] - beta)
    / sqrt(16): the head attends to position t - length + 1 with weight e^z / (e^z + t), z =
    sharpness * alpha^2 / 4, and evenly before that position exists."""
    d = 16
    model = build_model(TransformerConfig(vocab_size=10, d_model=d, n_layers=1, n_heads=1, d_ff=4, context_length=d,
                                          dropout=0.0)).eval()
    mean, var = 1 / d, (1 / d) * (1 - 1 / d)
    alpha = 1 / math.sqrt(var + 1e-5)
    shift = torch.zeros(d, d)
    for t in range(length - 1, d):
        shift[t - length + 1, t] = 1.0  # shift @ e_t = e_(t - length + 1)
    with torch.no_grad():
        model.tok_embed.weight.zero_()
        model.pos_embed.weight.copy_(torch.eye(d))
        qkv = model.blocks[0].attn.qkv
        qkv.weight.zero_()
        qkv.bias.zero_()
        qkv.weight[:d] = sharpness * shift
        qkv.bias[:d] = sharpness * alpha * mean * shift.sum(1)
        qkv.weight[d:2 * d] = torch.eye(d)
    return model, sharpness * alpha ** 2 / 4


def test_induction_score_of_a_transformer_whose_attention_is_set_by_hand():
    length = 5
    model, z = hand_set_transformer(length, sharpness=0.5)
    scores = induction_score(model, pool=range(1, 10), length=length, batch=3, prefix=[0])
    queries = range(1 + length, 1 + 2 * length)
    assert scores.shape == (1, 1)
    assert scores[0, 0] == pytest.approx(np.mean([math.exp(z) / (math.exp(z) + q) for q in queries]), rel=1e-4)
    with torch.no_grad():  # the same head's full pattern, row by row
        _, cache = run_with_cache(model, torch.arange(11)[None] % 10, names="blocks.0.attn.hook_pattern")
    att = cache["blocks.0.attn.hook_pattern"][0, 0].numpy()
    assert att[3, :4] == pytest.approx(np.full(4, 1 / 4)) and not att[3, 4:].any()  # no position 3 - 4 yet
    assert att[8, 4] == pytest.approx(math.exp(z) / (math.exp(z) + 8), rel=1e-4)
    assert att[8, :4] == pytest.approx(np.full(4, 1 / (math.exp(z) + 8)), rel=1e-4)
    row = head_stats(att[None, None], induction=scores)[0]
    assert row["induction_score"] == scores[0, 0]
    with torch.no_grad():  # zero queries and keys: every row attends evenly, 1 / (q + 1) on the induction key
        model.blocks[0].attn.qkv.weight.zero_()
        model.blocks[0].attn.qkv.bias.zero_()
    uniform = induction_score(model, pool=range(1, 10), length=length, batch=2, prefix=[0])
    assert uniform[0, 0] == pytest.approx(np.mean([1 / (q + 1) for q in queries]), rel=1e-5)


def test_induction_score_needs_a_transformer():
    with pytest.raises(LabkitError, match="Transformer"):
        induction_score(seeded(TINY_LSTM))


# --- saliency -----------------------------------------------------------------------------------
def test_gradient_x_input_of_a_linear_rnn_matches_the_closed_form():
    """ReLU RNN with W_ih = I, W_hh = a I, no biases, positive embeddings: h_t = sum_k a^(t-k) x_k,
    logits z = W h_t + b, so d log p_y / d x_k = a^(t-k) (W_y - p^T W)."""
    a, V, d = 0.5, 6, 3
    model = seeded(RNNConfig(vocab_size=V, cell="rnn_relu", d_embed=d, d_hidden=d, n_layers=1, dropout=0.0))
    with torch.no_grad():
        model.embed.weight.uniform_(0.1, 1.0)
        model.rnn.weight_ih_l0.copy_(torch.eye(d))
        model.rnn.weight_hh_l0.copy_(a * torch.eye(d))
        model.rnn.bias_ih_l0.zero_()
        model.rnn.bias_hh_l0.zero_()
    ids, targets = [2, 4, 1, 5], [3, 0, 2, 4]
    x = model.embed.weight.detach().double().numpy()[ids]  # (T, d)
    W, b = model.head.weight.detach().double().numpy(), model.head.bias.detach().double().numpy()
    expected = np.zeros((4, 4))
    for t in range(4):
        h = sum(a ** (t - k) * x[k] for k in range(t + 1))
        z = W @ h + b
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        g = W[targets[t]] - p @ W
        for k in range(t + 1):
            expected[t, k] = a ** (t - k) * x[k] @ g
    np.testing.assert_allclose(gradient_x_input(model, ids, targets), expected, rtol=1e-4, atol=1e-7)


def test_gradient_x_input_of_a_transformer_matches_finite_differences():
    """Scaling token s's embedding by (1 + eps) changes log p by eps * (e_s . grad): the gradient x input."""
    model = seeded(TINY_TRANSFORMER).double()
    ids, targets = [3, 7, 1, 9, 4], [7, 1, 9, 4, 2]
    scores = gradient_x_input(model, ids, targets)
    eps = 1e-4

    def log_p(t: int, s: int, scale: float) -> float:
        with torch.no_grad():
            row = model.tok_embed.weight[ids[s]].clone()
            model.tok_embed.weight[ids[s]] *= scale
            out = F.log_softmax(model(torch.tensor([ids[:t + 1]])).logits[0, t], -1)[targets[t]].item()
            model.tok_embed.weight[ids[s]] = row
        return out

    for t in range(5):
        for s in range(5):
            numeric = (log_p(t, s, 1 + eps) - log_p(t, s, 1 - eps)) / (2 * eps) if s <= t else 0.0
            assert scores[t, s] == pytest.approx(numeric, rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("config", [TINY_LSTM, TINY_TRANSFORMER])
def test_occlusion_matches_a_direct_computation(config):
    model = seeded(config)
    ids, targets, unk = [3, 7, 1, 9, 4, 7], [7, 1, 9, 4, 2, 5], 0
    scores = occlusion(model, ids, targets, unk)

    def log_p(seq: list[int], t: int) -> float:
        with torch.no_grad():
            return F.log_softmax(model(torch.tensor([seq[:t + 1]])).logits[0, t], -1)[targets[t]].item()

    for t in range(6):
        for s in range(6):
            occluded = [unk if i == s else x for i, x in enumerate(ids)]
            expected = log_p(ids, t) - log_p(occluded, t) if s <= t else 0.0
            assert scores[t, s] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("config", [TINY_LSTM, TINY_TRANSFORMER])
def test_saliency_of_a_sentence_for_both_families(config, tok):
    model = seeded(config.replace(vocab_size=tok.vocab_size))
    text = "the dog near the cats"
    for method in ("gradient", "occlusion"):
        result = saliency(model, tok, text, method=method, target="runs")
        assert result.tokens == text.split() and result.scores.shape == (5, 5)
        assert result.targets[:4] == tok.encode("dog near the cats") and result.target_tokens[-1] == "runs"
        assert np.allclose(np.triu(result.scores, 1), 0.0)
        np.testing.assert_allclose(result.shares().sum(-1), 1.0, rtol=1e-6)
    guessed = saliency(model, tok, text)  # the last row explains the model's own top guess
    with torch.no_grad():
        top = model(torch.tensor([tok.encode(text)])).logits[0, -1].argmax().item()
    assert guessed.targets[-1] == top
    assert saliency(model, tok, text, position=1, target="fast").targets[1] == tok.encode("fast")[0]
    with pytest.raises(LabkitError):
        saliency(model, tok, text, method="magic")
    with pytest.raises(LabkitError):
        saliency(model, tok, text, target="two words")


def test_next_token_analyses_refuse_a_classifier(tok):
    classifier = SequenceClassifier(ClassifierConfig(body=TINY_LSTM.replace(vocab_size=tok.vocab_size).to_dict()))
    for analysis in (saliency, token_surprisal):
        with pytest.raises(LabkitError, match="classifier"):
            analysis(classifier, tok, "the dog")


# --- surprisal ------------------------------------------------------------------------------------
def test_surprisal_of_a_model_with_fixed_logits_is_minus_log2_softmax(tok):
    """A tanh RNN with every weight zero has h = 0, so its logits are the output bias b at every
    position: surprisal(token) = -log2 softmax(b)[token]."""
    model = seeded(RNNConfig(vocab_size=tok.vocab_size, cell="rnn_tanh", d_embed=4, d_hidden=4, n_layers=1,
                             dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.zero_() if name != "head.bias" else p.copy_(torch.linspace(-2, 2, tok.vocab_size))
    b = np.linspace(-2, 2, tok.vocab_size)
    log2_softmax = (b - np.log(np.exp(b).sum())) / np.log(2)
    result = token_surprisal(model, tok, "the cat runs")
    assert result.tokens == ["the", "cat", "runs"]
    np.testing.assert_allclose(result.bits, -log2_softmax[tok.encode("the cat runs")], rtol=1e-5)
    assert result.mean_bits == pytest.approx(result.bits.mean())


def test_surprisal_of_a_transformer_reads_each_token_after_eos_and_the_tokens_before(tok):
    model = seeded(TINY_TRANSFORMER.replace(vocab_size=tok.vocab_size))
    ids = tok.encode("the dog near the cats runs")
    with torch.no_grad():
        logits = model(torch.tensor([[tok.eos_id, *ids[:-1]]])).logits[0]
    expected = -F.log_softmax(logits, -1)[torch.arange(len(ids)), ids] / math.log(2)
    np.testing.assert_allclose(token_surprisal(model, tok, "the dog near the cats runs").bits, expected.numpy(),
                               rtol=1e-5)
    long_text = " ".join(["the dog"] * 20)  # 40 tokens: the context (16) holds <eos> and 15
    cut = token_surprisal(model, tok, long_text)
    assert len(cut.bits) == 15 and cut.total_tokens == 40 and cut.notices


def test_compare_surprisal_cuts_runs_to_a_common_length_and_renders(tok):
    runs = {"lstm": (seeded(TINY_LSTM.replace(vocab_size=tok.vocab_size)), tok),
            "transformer": (seeded(TINY_TRANSFORMER.replace(vocab_size=tok.vocab_size)), tok)}
    text = " ".join(["the dog <b>"] * 8)
    results = compare_surprisal(runs, text)
    assert [len(r.bits) for r in results.values()] == [15, 15] and results["lstm"].notices
    html = surprisal_html(results)
    assert "&lt;unk&gt;" in html and "lstm" in html and html.count('<span title="') == 30  # one per token
    top = max(float(r.bits.max()) for r in results.values())
    assert f"0 to {top:.1f} bits" in html and html.count("linear-gradient") == 1  # and one legend
    fig = cp.surprisal_figure({n: (r.tokens, r.bits) for n, r in results.items()})
    assert np.asarray(fig.data[0].z).shape == (2, 15)
    other = WordTokenizer.train(["the dog ' s cat"], split="basic_english", specials=("<unk>", "<eos>"))
    with pytest.raises(LabkitError, match="different numbers of tokens"):  # "dog's" is 1 word here, 3 there
        compare_surprisal({"a": runs["lstm"], "b": (seeded(TINY_LSTM.replace(vocab_size=other.vocab_size)), other)},
                          "the dog's cat")


# --- loss by position and by frequency --------------------------------------------------------------
@pytest.mark.parametrize("config", [TINY_LSTM, TINY_TRANSFORMER])
def test_loss_by_position_matches_reading_every_prefix_alone(config):
    model = seeded(config)
    stream = torch.randint(30, (8 * 4 + 3,), generator=torch.Generator().manual_seed(1))
    curve = loss_by_position(model, stream, 8, batch_size=3, max_windows=3)
    expected = np.zeros(8)
    for w in range(3):
        x, y = stream[8 * w:8 * w + 8], stream[8 * w + 1:8 * w + 9]
        for t in range(8):
            with torch.no_grad():
                logits = model(x[None, :t + 1]).logits[0, t]
            expected[t] += F.cross_entropy(logits, y[t]).item() / 3
    np.testing.assert_allclose(curve, expected, rtol=1e-5)


def test_frequency_buckets_are_log_spaced_with_unseen_first():
    # 101 ** (k / 5) = 1, 2.52, 6.34, 15.9, 40.1, 101, rounded
    assert frequency_buckets(np.array([0, 1, 5, 10, 100])) == [(0, 1), (1, 3), (3, 6), (6, 16), (16, 40), (40, 101)]
    assert frequency_buckets(np.array([0, 1, 5, 10, 100]), n_buckets=2) == [(0, 1), (1, 10), (10, 101)]
    with pytest.raises(LabkitError):
        frequency_buckets(np.zeros(3, dtype=int))


def test_perplexity_by_frequency_matches_a_brute_force_loop():
    model = seeded(TINY_TRANSFORMER)
    gen = torch.Generator().manual_seed(2)
    train = torch.cat([torch.zeros(200, dtype=torch.long), torch.randint(30, (100,), generator=gen)])
    stream = torch.randint(30, (16 * 3 + 1,), generator=gen)
    counts = token_counts(train, 30)
    assert counts[0] >= 200 and counts.sum() == 300
    rows = perplexity_by_frequency(model, stream, counts, 16, n_buckets=3)
    losses: dict[tuple[int, int], list[float]] = {}
    for w in range(3):
        x, y = stream[16 * w:16 * w + 16], stream[16 * w + 1:16 * w + 17]
        with torch.no_grad():
            nll = F.cross_entropy(model(x[None]).logits[0], y, reduction="none")
        for target, loss in zip(y.tolist(), nll.tolist()):
            count = int((train == target).sum())
            bucket = next(b for b in frequency_buckets(counts, 3) if b[0] <= count < b[1])
            losses.setdefault(bucket, []).append(loss)
    assert [(r["low"], r["high"]) for r in rows] == sorted(losses)
    for r in rows:
        assert r["tokens"] == len(losses[(r["low"], r["high"])])
        assert r["loss"] == pytest.approx(np.mean(losses[(r["low"], r["high"])]), rel=1e-5)
        assert r["ppl"] == pytest.approx(math.exp(r["loss"]))
    assert sum(r["types"] for r in rows) <= 30


# --- attention before and after fine-tuning ----------------------------------------------------------
def test_attention_change_reads_a_fine_tuned_classifier_body(tok):
    base = seeded(TINY_TRANSFORMER.replace(vocab_size=tok.vocab_size))
    tuned = SequenceClassifier(ClassifierConfig(body=base.config.to_dict()))
    tuned.body.load_state_dict(base.state_dict())
    text = "the dog near the cats"
    before, after = capture_attention(base, tok, text), capture_attention(tuned, tok, text)
    assert attention_change(before.attention, after.attention).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    with torch.no_grad():
        tuned.body.blocks[0].attn.qkv.weight.mul_(30)
    after = capture_attention(tuned, tok, text)
    change = attention_change(before.attention, after.attention)
    tv = 0.5 * np.abs(before.attention[0, 1] - after.attention[0, 1]).sum(-1).mean()
    assert change[0, 1] == pytest.approx(tv) and change[0].min() > 0
    fig = cp.attention_difference_figure(before.attention[0, 1], after.attention[0, 1], after.tokens)
    diff = np.asarray(fig.data[4].z, dtype=float)
    assert fig.data[4].zmid == 0 and diff[4, 0] == pytest.approx(after.attention[0, 1, 4, 0] - before.attention[0, 1, 4, 0])
    assert np.isnan(diff[0, 4])  # the causal mask


# --- matched budget ---------------------------------------------------------------------------------
def test_compare_budget_trains_matched_models_on_the_same_tokens(tmp_path):
    data_config = DataConfig(corpus="synthetic-copy", train_tokens=3000, eval_tokens=300)
    transformer = TINY_TRANSFORMER.replace(vocab_size=35)
    lstm = matched_rnn(TINY_LSTM.replace(tie_weights=True), parameter_count(transformer), 35)
    assert abs(parameter_count(lstm) - parameter_count(transformer)) < 0.05 * parameter_count(transformer)  # tiny: coarse steps
    train = TrainConfig(batch_size=4, seq_len=16, eval_every=2, log_every=1, lr=1e-3, device="cpu")
    results = compare_budget({"transformer": (transformer, train), "lstm": (lstm, train)}, data_config, tmp_path,
                             tokens=4 * 16 * 3)
    rows = [r.row() for r in results.values()]
    assert [r["tokens"] for r in rows] == [192, 192] and [r["family"] for r in rows] == ["transformer", "rnn"]
    for r, run in zip(rows, results.values()):
        assert r["train_flops"] == 3 * r["flops_per_token"] * 192 and r["wall_time_s"] > 0
        assert [p["tokens"] for p in run.val] == [128, 192] and all(math.isfinite(p["val_loss"]) for p in run.val)
        assert run.val[-1]["train_flops"] == r["train_flops"] and run.path == tmp_path / run.name



def test_compare_budget_matches_flops_or_refuses_two_budgets(tmp_path):
    data_config = DataConfig(corpus="synthetic-copy", train_tokens=3000, eval_tokens=300)
    transformer = TINY_TRANSFORMER.replace(vocab_size=35)
    lstm = TINY_LSTM.replace(vocab_size=35)
    train = TrainConfig(batch_size=4, seq_len=16, eval_every=100, log_every=1, lr=1e-3, device="cpu")
    per_token = {name: 3 * build_model(c).flops_per_token(16) for name, c in (("t", transformer), ("l", lstm))}
    budget = per_token["t"] * 64 * 3  # three transformer steps of 4 x 16 tokens
    results = compare_budget({"t": (transformer, train), "l": (lstm, train)}, data_config, tmp_path, flops=budget)
    steps = {"t": 3, "l": math.ceil(math.ceil(budget / per_token["l"]) / 64)}
    assert steps["l"] != 3  # the two models cost differently per token
    for name, run in results.items():
        assert run.card["steps"] == steps[name] and run.row()["train_flops"] == per_token[name] * 64 * steps[name]
    with pytest.raises(LabkitError, match="exactly one budget"):
        compare_budget({"t": (transformer, train)}, data_config, tmp_path / "x", tokens=64, flops=budget)


# --- figures ----------------------------------------------------------------------------------------
def test_comparison_figures_take_plain_rows():
    sal = np.tril(np.ones((3, 3))) / np.arange(1, 4)[:, None]
    fig = cp.position_maps_figure({"lstm": (sal, ["a", "b", "c"]), "transformer": (sal, ["a", "b", "c"])})
    assert [t.name for t in fig.data] == ["lstm", "causal mask", "transformer", "causal mask"]
    assert np.isnan(np.asarray(fig.data[0].z, dtype=float)[0, 2])
    rows = {"lstm": [{"distance": 0, "accuracy": 0.9, "count": 4}, {"distance": 4, "accuracy": 0.6, "count": 4}]}
    fig = cp.probe_figure(rows)
    assert list(fig.data[0].x) == [0, 4] and list(fig.data[0].y) == [0.9, 0.6] and fig.layout.shapes
    fig = cp.frequency_figure({"lstm": [{"low": 0, "high": 1, "ppl": 50.0, "tokens": 3},
                                        {"low": 1, "high": 10, "ppl": 20.0, "tokens": 9}]})
    assert list(fig.data[0].x) == ["unseen", "1-9"]
    fig = cp.position_loss_figure({"lstm": [3.0, 2.0, 1.5]})
    assert list(fig.data[0].x) == [0, 1, 2]
    stats = head_stats(np.full((1, 2, 3, 3), 1 / 3), induction=np.array([[0.1, 0.9]]))
    assert len(head_stats_figure(stats).data) == 5 and len(head_stats_figure(head_stats(np.ones((1, 1, 1, 1)))).data) == 4


def test_match_budgets_gives_both_the_same_time_then_the_thriftier_ones_flops(tmp_path):
    data_config = DataConfig(corpus="synthetic-copy", train_tokens=3000, eval_tokens=300)
    train = TrainConfig(batch_size=4, seq_len=16, eval_every=10**6, log_every=1, lr=1e-3, device="cpu")
    big = TINY_TRANSFORMER.replace(vocab_size=35)
    small = TINY_LSTM.replace(vocab_size=35)
    seen = []
    runs = match_budgets({"t": (big, train), "l": (small, train)}, data_config, tmp_path, 0.5,
                         callbacks=lambda budget, name: seen.append((budget, name)) or [])
    assert set(runs) == {"time", "flops"} and all(set(r) == {"t", "l"} for r in runs.values())
    spent = {name: run.card["train_flops"] for name, run in runs["time"].items()}
    thrifty, rich = sorted(spent, key=spent.get)
    for name, run in runs["time"].items():
        assert run.path == tmp_path / "time" / name and run.card["wall_time_s"] >= 0.5  # training time
    assert runs["flops"][thrifty].path == runs["time"][thrifty].path  # its time run is its FLOPs run
    again = runs["flops"][rich]
    assert again.path == tmp_path / "flops" / rich
    per_step = 3 * build_model(big if rich == "t" else small).flops_per_token(16) * 64
    # the fewest whole steps whose FLOPs reach the thriftier run's
    assert again.card["steps"] == math.ceil(math.ceil(spent[thrifty] / (per_step / 64)) / 64)
    assert spent[thrifty] <= again.card["train_flops"] < spent[thrifty] + per_step
    assert seen == [("time", "t"), ("time", "l"), ("flops", rich)]
