"""Unit tests for both model families on tiny configurations (no data files)."""

import json

import pytest
import torch

from labkit.errors import LabkitError
from labkit.models import (
    CELLS,
    ClassifierConfig,
    RNNConfig,
    SequenceClassifier,
    TransformerConfig,
    build_model,
    config_from_dict,
    count_parameters,
    run_with_cache,
)
from labkit.models.classifier import POOLINGS
from labkit.models.transformer import causal_mask

V = 37


def tiny_transformer(**kw) -> TransformerConfig:
    base = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4, d_ff=64, context_length=24,
                dropout=0.0)
    return TransformerConfig(**{**base, **kw})


def tiny_rnn(cell: str = "lstm", **kw) -> RNNConfig:
    base = dict(vocab_size=V, cell=cell, d_embed=16, d_hidden=16, n_layers=2, dropout=0.0)
    return RNNConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("cell", CELLS)
def test_rnn_shapes_and_state_carry(cell):
    model = build_model(tiny_rnn(cell)).eval()
    x = torch.randint(0, V, (3, 10))
    full = model(x)
    assert full.logits.shape == (3, 10, V)
    assert full.hidden.shape == (3, 10, 16)
    # Two half windows with the state carried give exactly the full-window result.
    first = model(x[:, :5])
    second = model(x[:, 5:], first.state)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), full.logits)
    # A fresh state for the second half gives something else: the state really carries context.
    assert not torch.allclose(model(x[:, 5:]).logits, full.logits[:, 5:])


def test_rnn_init_hidden_and_detach():
    model = build_model(tiny_rnn("lstm"))
    h, c = model.init_hidden(4)
    assert h.shape == c.shape == (2, 4, 16) and h.abs().sum() == 0
    out = model(torch.randint(0, V, (4, 3)))
    detached = model.detach_state(out.state)
    assert all(not s.requires_grad for s in detached)
    assert isinstance(build_model(tiny_rnn("gru")).init_hidden(2), torch.Tensor)


def test_weight_tying_shares_one_matrix():
    tied = build_model(tiny_rnn(tie_weights=True))
    untied = build_model(tiny_rnn(tie_weights=False))
    assert tied.head.weight.data_ptr() == tied.embed.weight.data_ptr()
    assert count_parameters(untied) - count_parameters(tied) == V * 16
    t = build_model(tiny_transformer(tie_weights=True))
    assert t.head.weight.data_ptr() == t.tok_embed.weight.data_ptr()
    with pytest.raises(ValueError, match="d_embed == d_hidden"):
        RNNConfig(d_embed=10, d_hidden=20, tie_weights=True)


def test_attention_read_through_hooks_matches_the_fused_path():
    model = build_model(tiny_transformer()).eval()
    x = torch.randint(0, V, (2, 24))
    fused = model(x)  # no hook: the fused kernel, no pattern computed
    explicit, cache = run_with_cache(model, x, names="blocks.*.attn.hook_pattern")
    torch.testing.assert_close(explicit.logits, fused.logits, atol=1e-5, rtol=0)
    patterns = cache.stack("attn.hook_pattern")
    assert list(cache) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    assert patterns.shape == (2, 2, 4, 24, 24)  # (layers, B, heads, T, S)
    for att in patterns:
        torch.testing.assert_close(att.sum(-1), torch.ones(2, 4, 24))
        # Causal: no weight on later positions.
        assert att.masked_select(~causal_mask(24, 24)).abs().max() == 0


def test_causality_future_tokens_do_not_change_past_logits():
    model = build_model(tiny_transformer()).eval()
    x = torch.randint(0, V, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % V
    torch.testing.assert_close(model(x).logits[:, :8], model(y).logits[:, :8])


def test_kv_cache_matches_full_recomputation():
    model = build_model(tiny_transformer()).eval()
    x = torch.randint(0, V, (2, 20))
    full = model(x).logits
    cache = model.new_cache()
    pieces = [model(x[:, :7], cache).logits, model(x[:, 7:12], cache).logits]  # chunked prefill
    pieces += [model(x[:, t:t + 1], cache).logits for t in range(12, 20)]  # one token at a time
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=0)
    # The explicit path (a hook wants the pattern) with a cache agrees too.
    cache2 = model.new_cache()
    run_with_cache(model, x[:, :12], state=cache2, names="blocks.*.attn.hook_pattern")
    step, seen = run_with_cache(model, x[:, 12:13], state=cache2, names="blocks.*.attn.hook_pattern")
    assert seen["blocks.0.attn.hook_pattern"].shape == (2, 4, 1, 13)
    torch.testing.assert_close(step.logits, full[:, 12:13], atol=1e-5, rtol=0)


def test_context_length_is_enforced():
    model = build_model(tiny_transformer(context_length=8))
    with pytest.raises(ValueError, match="context length"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("make", [tiny_rnn, tiny_transformer])
def test_config_json_round_trip_and_rebuild(make):
    config = make()
    again = config_from_dict(json.loads(config.to_json()))
    assert again == config
    a, b = build_model(config), build_model(again)
    assert count_parameters(a) == count_parameters(b) > 0


def test_config_errors_are_clear():
    with pytest.raises(LabkitError, match="unknown field"):
        config_from_dict({"family": "rnn", "hidden": 3})
    with pytest.raises(LabkitError, match="family"):
        config_from_dict({"family": "cnn"})
    with pytest.raises(LabkitError, match="divisible"):
        TransformerConfig.from_dict({"d_model": 30, "n_heads": 4})
    with pytest.raises(LabkitError, match="cell"):
        RNNConfig.from_dict({"cell": "lstmm"})


def test_parameter_count_by_hand():
    # 1-layer GRU, no tying: embedding V*E, GRU 3*(H*E + H*H + 2H), head H*V + V.
    E = H = 8
    model = build_model(RNNConfig(vocab_size=V, cell="gru", d_embed=E, d_hidden=H, n_layers=1,
                                  dropout=0.0))
    assert count_parameters(model) == V * E + 3 * (H * E + H * H + 2 * H) + H * V + V


def test_flops_per_token_counts_the_matrix_products():
    c = tiny_transformer()
    model = build_model(c)
    # Non-embedding weight matrices: 2 FLOPs per weight per token, plus the output layer and
    # the attention scores / weighted sum over the context.
    matrices = sum(p.numel() for n, p in model.named_parameters()
                   if p.dim() == 2 and "embed" not in n)
    expected = 2 * matrices + 2 * c.d_model * V + c.n_layers * 4 * c.context_length * c.d_model
    assert model.flops_per_token() == expected
    r = build_model(tiny_rnn("lstm", n_layers=1))
    assert r.flops_per_token() == 2 * 4 * 16 * 32 + 2 * 16 * V


def test_compute_logits_false_returns_hidden_only():
    for config in (tiny_rnn(), tiny_transformer()):
        out = build_model(config)(torch.randint(0, V, (2, 5)), compute_logits=False)
        assert out.logits is None and out.hidden.shape[:2] == (2, 5)


def test_rnn_forward_refuses_unknown_arguments():
    model = build_model(tiny_rnn())
    with pytest.raises(TypeError):
        model(torch.zeros(1, 3, dtype=torch.long), use_cache=True)  # a Transformer's argument


def test_state_dict_keys_are_those_of_saved_runs():
    """Hook points and fast-path swaps hold no parameters: old run directories still load."""
    rnn = build_model(tiny_rnn("lstm", n_layers=1))
    assert list(rnn.state_dict()) == ["embed.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
                                      "rnn.bias_hh_l0", "head.weight", "head.bias"]
    t = build_model(tiny_transformer(n_layers=1))
    block = ["ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
             "ln2.weight", "ln2.bias", "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias"]
    assert list(t.state_dict()) == ["tok_embed.weight", "pos_embed.weight", *(f"blocks.0.{k}" for k in block),
                                    "ln_f.weight", "ln_f.bias", "head.weight"]
    assert list(build_model(tiny_transformer(n_layers=1), fast=False).state_dict()) == list(t.state_dict())


def test_each_family_describes_itself():
    rnn, t = build_model(tiny_rnn()), build_model(tiny_transformer())
    assert (rnn.carries_state, rnn.width, rnn.context_length, rnn.default_pooling) == (True, 16, None, "last")
    assert (t.carries_state, t.width, t.context_length, t.default_pooling) == (False, 32, 24, "mean")
    # the parameter count from the config alone: the matrices, not the biases and norms
    for model in (rnn, t):
        matrices = sum(p.numel() for p in model.parameters() if p.dim() == 2)
        assert model.config.approximate_parameters() == matrices


@pytest.mark.parametrize("make", [tiny_rnn, tiny_transformer])
def test_layer_groups_run_from_the_top_down_to_the_embeddings(make):
    model = build_model(make())
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [sorted(names[id(p)] for p in g) for g in model.layer_groups()]
    if model.carries_state:
        expected = [[f"rnn.{w}_{x}_l{k}" for w in ("bias", "weight") for x in ("hh", "ih")] for k in (1, 0)]
        expected.append(["embed.weight"])
    else:
        expected = [sorted(n for n in names.values() if n.startswith(("ln_f.", "blocks.1."))),
                    sorted(n for n in names.values() if n.startswith("blocks.0.")),
                    ["pos_embed.weight", "tok_embed.weight"]]
    assert groups == expected  # everything but the output layer, which a classifier does not use
    classifier = SequenceClassifier(ClassifierConfig(body=model.config.to_dict()))
    assert [len(g) for g in classifier.layer_groups()] == [len(g) for g in expected]


@pytest.mark.parametrize("make", [tiny_rnn, tiny_transformer])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_classifier_pooling_ignores_padding(make, pooling):
    classifier = SequenceClassifier(ClassifierConfig(body=make().to_dict(), pooling=pooling, dropout=0.0)).eval()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    padded = torch.cat([ids, torch.full((2, 3), 3)], 1)  # padding with a real token id: it must not count
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], 1)
    with torch.no_grad():
        scores = classifier(ids, mask)
        torch.testing.assert_close(classifier(padded, padded_mask), scores)
        # the pooled vector by hand, from the body's states at the real tokens of sentence 1
        h = classifier.body(ids[1:, :2], compute_logits=False).hidden[0]  # (2, D)
        by_hand = {"last": h[-1], "mean": h.mean(0), "max": h.amax(0), "concat": torch.cat([h[-1], h.amax(0), h.mean(0)])}
        torch.testing.assert_close(scores[1], classifier.head(by_hand[pooling]), atol=1e-6, rtol=1e-5)
    assert classifier.head.in_features == classifier.body.width * (3 if pooling == "concat" else 1)


@pytest.mark.parametrize("family", [[], {}, None, 3, "cnn"])
def test_a_config_whose_family_is_not_a_known_name_is_refused(family):
    with pytest.raises(LabkitError, match="model config has family"):
        config_from_dict({"family": family, "cell": "lstm"})
