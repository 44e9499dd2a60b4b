"""labkit.inspect.surgery: switching heads, units and layers off, checked against models whose
weights are set by hand (tests/handset.py: a Transformer and a ReLU RNN), so every expected
log-probability is computed here from the formulas, not by the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labkit.errors import LabkitError
from labkit.inspect.surgery import ablate, head_importance, unit_importance

from handset import Letters, by_hand, hand_set_rnn, hand_set_transformer


def logp_of(logits: torch.Tensor, targets: list[int]) -> np.ndarray:
    return torch.log_softmax(logits.double(), -1)[torch.arange(len(targets)), targets].numpy()


TEXT = "d b b c a d"  # ids 3 1 1 2 0 3


def test_switching_a_head_off_changes_each_token_by_what_the_hand_computation_says():
    model, a, b = hand_set_transformer()
    tok = Letters(4)
    targets = tok.encode(TEXT)
    inputs = [tok.eos_id, *targets[:-1]]  # the text read after <eos>
    for off, kept in ((0, (False, True)), (1, (True, False))):
        effect = ablate(model, tok, TEXT, heads=[(0, off)])
        assert effect.tokens == TEXT.split() and effect.targets == targets
        np.testing.assert_allclose(effect.base_logp, logp_of(by_hand(inputs, a, b), targets), atol=1e-5)
        np.testing.assert_allclose(effect.ablated_logp, logp_of(by_hand(inputs, a, b, kept), targets), atol=1e-5)
        np.testing.assert_allclose(effect.delta, effect.ablated_logp - effect.base_logp)
        assert np.abs(effect.delta).max() > 0.05  # the head mattered: the check has teeth
    both = ablate(model, tok, TEXT, heads=[(0, 0), (0, 1)])  # two heads of one layer at once
    np.testing.assert_allclose(both.ablated_logp, logp_of(by_hand(inputs, a, b, (False, False)), targets), atol=1e-5)
    assert both.loss_increase == pytest.approx(float(np.mean(both.base_logp - both.ablated_logp)))


def test_removing_a_transformer_block_leaves_the_embeddings():
    model, a, b = hand_set_transformer()
    tok = Letters(4)
    targets = tok.encode(TEXT)
    inputs = [tok.eos_id, *targets[:-1]]
    # no block: the stream is the embedding [a, -a, b, -b] (norm 2, mean 0, variance 1), the final
    # LayerNorm divides it by sqrt(1 + eps) and the identity head reads it out
    embed = torch.stack([a, -a, b, -b], 1)[inputs] / math.sqrt(1 + 1e-5)
    with torch.no_grad():
        model.blocks[0].mlp.proj.bias.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))  # the MLP writes too
    effect = ablate(model, tok, TEXT, layers=[0])
    assert np.abs(effect.delta).max() > 0.05
    np.testing.assert_allclose(effect.ablated_logp, logp_of(embed, targets), atol=1e-5)


def test_head_importance_is_the_mean_loss_increase_over_all_the_texts_tokens():
    model, a, b = hand_set_transformer()
    tok = Letters(4)
    texts = [TEXT, "c c a"]  # different lengths: the padding must not count
    rows = head_importance(model, tok, texts)
    expected = {}
    for head, kept in ((0, (False, True)), (1, (True, False))):
        base, cut = [], []
        for text in texts:
            targets = tok.encode(text)
            inputs = [tok.eos_id, *targets[:-1]]
            base += list(logp_of(by_hand(inputs, a, b), targets))
            cut += list(logp_of(by_hand(inputs, a, b, kept), targets))
        expected[head] = float(np.mean(base) - np.mean(cut))  # mean loss with the head off minus with it
    assert [(r["layer"], r["head"]) for r in rows] == sorted(((0, h) for h in expected), key=lambda k: -expected[k[1]])
    assert {r["head"]: r["loss_increase"] for r in rows} == {h: pytest.approx(v, abs=1e-5) for h, v in expected.items()}


def test_switching_an_rnn_unit_off_reaches_every_later_step():
    alpha, j = 0.5, 1
    model = hand_set_rnn(alpha)
    tok = Letters(6)
    text = "c e b f d"
    targets = tok.encode(text)
    inputs = [tok.eos_id, *targets[:-1]]
    e = model.embed.weight.detach()[inputs].double()  # (T, 3)
    W, bias = model.head.weight.detach().double(), model.head.bias.detach().double()
    # h_t = sum_k alpha^(t-k) x_k; with unit j zeroed at every step it stays 0 there
    h = torch.stack([sum(alpha ** (t - k) * e[k] for k in range(t + 1)) for t in range(len(inputs))])
    cut = h.clone()
    cut[:, j] = 0.0
    effect = ablate(model, tok, text, units=[(0, j)])
    np.testing.assert_allclose(effect.base_logp, logp_of(h @ W.T + bias, targets), atol=1e-5)
    np.testing.assert_allclose(effect.ablated_logp, logp_of(cut @ W.T + bias, targets), atol=1e-5)
    whole = ablate(model, tok, text, layers=[0])  # the layer's state all zero: only the bias is left
    np.testing.assert_allclose(whole.ablated_logp, logp_of(bias.expand(len(inputs), -1), targets), atol=1e-5)
    # the ranking removes each unit alone: for one text, each unit's ablate() loss increase
    rows = unit_importance(model, tok, [text], 0, top=3)
    each = {u: ablate(model, tok, text, units=[(0, u)]).loss_increase for u in range(3)}
    assert [r["unit"] for r in rows] == sorted(each, key=lambda u: -each[u])
    assert [r["loss_increase"] for r in rows] == pytest.approx(sorted(each.values(), reverse=True), abs=1e-6)
    assert len(unit_importance(model, tok, [text, "b b"], 0, top=2)) == 2


def test_wrong_parts_are_one_line_errors():
    model, _, _ = hand_set_transformer()
    tok = Letters(4)
    with pytest.raises(LabkitError, match="no head L0 H7"):
        ablate(model, tok, TEXT, heads=[(0, 7)])
    with pytest.raises(LabkitError, match="no layer 3"):
        ablate(model, tok, TEXT, layers=[3])
    with pytest.raises(LabkitError, match="Transformer only"):
        ablate(hand_set_rnn(), Letters(6), "a b", heads=[(0, 0)])
    with pytest.raises(LabkitError, match="unit_importance"):
        head_importance(hand_set_rnn(), Letters(6), ["a b"])
    with pytest.raises(LabkitError, match="no tokens"):
        ablate(model, tok, "   ", heads=[(0, 0)])
