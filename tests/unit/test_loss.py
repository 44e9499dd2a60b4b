"""The chunked loss (labkit.models.loss) against torch's cross-entropy, and the adaptive softmax
output layer (labkit.models.output)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from labkit.errors import LabkitError
from labkit.models import RNNConfig, TransformerConfig, build_model, config_from_dict, count_parameters
from labkit.models.loss import linear_cross_entropy, lm_loss
from labkit.models.output import default_cutoffs, head_flops, train_flops_per_token


def plain(hidden, weight, bias, targets, reduction="mean"):
    return F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction=reduction)


def grads(fn, *tensors):
    for t in tensors:
        t.grad = None
    loss = fn()
    loss.backward()
    return loss.detach(), [t.grad.clone() for t in tensors]


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, None])
@pytest.mark.parametrize("with_bias", [True, False])
def test_chunked_loss_equals_cross_entropy_fp32(chunk_rows, with_bias):
    torch.manual_seed(0)
    N, D, V = 50, 12, 97
    h = torch.randn(N, D, requires_grad=True)
    w = torch.randn(V, D, requires_grad=True)
    b = torch.randn(V, requires_grad=True) if with_bias else None
    y = torch.randint(V, (N,))
    params = [h, w] + ([b] if with_bias else [])
    ref, ref_grads = grads(lambda: plain(h, w, b, y), *params)
    out, out_grads = grads(lambda: linear_cross_entropy(h, w, b, y, chunk_rows=chunk_rows), *params)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    for g, r in zip(out_grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


def test_chunked_loss_sum_none_and_scaled_backward():
    torch.manual_seed(1)
    h, w, y = torch.randn(9, 5, requires_grad=True), torch.randn(11, 5), torch.randint(11, (9,))
    torch.testing.assert_close(linear_cross_entropy(h, w, None, y, reduction="sum", chunk_rows=4),
                               plain(h, w, None, y, "sum"))
    per_token = linear_cross_entropy(h, w, None, y, reduction="none", chunk_rows=2)
    torch.testing.assert_close(per_token, plain(h, w, None, y, "none"))
    # the gradient is computed in the forward pass; backward must still scale it by grad_output
    (3.0 * linear_cross_entropy(h, w, None, y, chunk_rows=4)).backward()
    fused = h.grad.clone()
    h.grad = None
    (3.0 * plain(h, w, None, y)).backward()
    torch.testing.assert_close(fused, h.grad)
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(h, w, None, y, reduction="max")


def test_chunked_loss_is_stable_for_huge_logits():
    h = torch.tensor([[1000.0, 0.0], [-1000.0, 5.0]])
    w = torch.eye(2)
    y = torch.tensor([1, 0])
    loss = linear_cross_entropy(h, w, None, y, reduction="none")
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, torch.tensor([1000.0, 1005.0]))


def test_chunked_loss_under_bf16_autocast_is_close_and_grads_are_fp32():
    torch.manual_seed(2)
    N, D, V = 64, 32, 500
    h = torch.randn(N, D, requires_grad=True)
    w = (torch.randn(V, D) * 0.1).requires_grad_()
    y = torch.randint(V, (N,))
    ref, (ref_h, ref_w) = grads(lambda: plain(h, w, None, y), h, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear_cross_entropy(h, w, None, y, chunk_rows=16)
    assert out.dtype == torch.float32  # the softmax runs in fp32 whatever the matmul dtype
    h.grad = w.grad = None
    out.backward()
    assert h.grad.dtype == w.grad.dtype == torch.float32
    assert abs(out.item() - ref.item()) < 1e-2 * ref.item()
    for g, r in ((h.grad, ref_h), (w.grad, ref_w)):
        assert (g - r).norm() / r.norm() < 2e-2


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_lm_loss_matches_the_models_logits(family):
    torch.manual_seed(3)
    cfg = (RNNConfig(vocab_size=41, d_embed=8, d_hidden=8, n_layers=1, dropout=0.0) if family == "rnn"
           else TransformerConfig(vocab_size=41, d_model=8, n_layers=1, n_heads=2, d_ff=16,
                                  context_length=16, dropout=0.0))
    model = build_model(cfg)
    x, y = torch.randint(41, (2, 6)), torch.randint(41, (2, 6))
    out = model(x)
    expected = F.cross_entropy(out.logits.flatten(0, 1), y.flatten())
    torch.testing.assert_close(lm_loss(model.head, out.hidden, y), expected)
    torch.testing.assert_close(lm_loss(model.head, out.hidden, y, fused=False), expected)


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_adaptive_softmax_is_a_distribution_and_its_loss_matches_its_logits(family):
    torch.manual_seed(4)
    V = 300
    cfg = (RNNConfig(vocab_size=V, d_embed=16, d_hidden=16, n_layers=1, dropout=0.0, output="adaptive",
                     adaptive_cutoffs=(20, 100)) if family == "rnn"
           else TransformerConfig(vocab_size=V, d_model=16, n_layers=1, n_heads=2, d_ff=32, context_length=16,
                                  dropout=0.0, tie_weights=False, output="adaptive", adaptive_cutoffs=(20, 100)))
    model = build_model(cfg)
    assert isinstance(model.head, nn.AdaptiveLogSoftmaxWithLoss)
    x, y = torch.randint(V, (2, 7)), torch.randint(V, (2, 7))
    out = model(x)
    assert out.logits.shape == (2, 7, V)
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(2, 7))  # log-probabilities
    expected = F.cross_entropy(out.logits.flatten(0, 1), y.flatten())
    torch.testing.assert_close(lm_loss(model.head, out.hidden, y), expected, rtol=1e-5, atol=1e-5)
    # fewer parameters than the full softmax, and a config round trip keeps the option
    full = build_model(cfg.replace(output="softmax", adaptive_cutoffs=()))
    assert count_parameters(model) < count_parameters(full)
    again = config_from_dict(cfg.to_dict())
    assert again.output == "adaptive" and again.adaptive_cutoffs == (20, 100)


def test_adaptive_defaults_flops_and_bad_settings():
    assert default_cutoffs(33_278) == [1997, 9983]
    full, adaptive = head_flops(200, 33_278, "softmax", ()), head_flops(200, 33_278, "adaptive", ())
    assert full == 2 * 200 * 33_278
    # head: 200 x (1997 + 2); tail 1: 200 -> 50 -> 7986 words; tail 2: 200 -> 12 -> 23295 words
    assert adaptive == 2 * (200 * 1999 + 200 * 50 + 50 * 7986 + 200 * 12 + 12 * 23_295)
    with pytest.raises(ValueError, match="tie_weights"):
        TransformerConfig(output="adaptive")  # tied by default
    with pytest.raises(ValueError, match="output must be"):
        RNNConfig(output="hierarchical")
    for cuts in ([5, 3], [0, 10], [10, 33_278]):
        with pytest.raises(ValueError, match="increase strictly"):
            RNNConfig(output="adaptive", adaptive_cutoffs=cuts)
    with pytest.raises(LabkitError, match="whole numbers"):
        config_from_dict({"family": "rnn", "output": "adaptive", "adaptive_cutoffs": ["a"]})
    assert adaptive < full


def test_training_flops_count_the_tail_clusters_the_targets_use():
    # width 8, 100 words, one cut at 10: head 8 x (10 + 1); the tail 8 -> 2 -> 90 words
    assert head_flops(8, 100, "adaptive", [10]) == 2 * (8 * 11) + 2 * (8 * 2 + 2 * 90)
    in_head, half = torch.tensor([1, 2, 3, 4]), torch.tensor([1, 50, 2, 60])
    assert head_flops(8, 100, "adaptive", [10], targets=in_head) == 2 * 8 * 11
    assert head_flops(8, 100, "adaptive", [10], targets=half) == 2 * 8 * 11 + 0.5 * 2 * (8 * 2 + 2 * 90)
    model = build_model(RNNConfig(vocab_size=100, d_embed=8, d_hidden=8, n_layers=1, output="adaptive",
                                  adaptive_cutoffs=(10,)))
    recurrent = 2 * 4 * 8 * (8 + 8)  # one LSTM layer: 4 gates, input and hidden
    assert train_flops_per_token(model, 16, half) == 3 * (recurrent + 2 * 8 * 11 + 0.5 * 2 * (8 * 2 + 2 * 90))
    assert train_flops_per_token(model, 16) == 3 * model.flops_per_token(16)
    # compare_budget(flops=...) counts on a model built on the meta device: the same figure
    from labkit.experiments import model_train_flops

    config = RNNConfig(vocab_size=100, d_embed=8, d_hidden=8, n_layers=1, output="adaptive", adaptive_cutoffs=(10,))
    assert model_train_flops(config, 16, half) == train_flops_per_token(model, 16, half)
