"""labkit.inspect.lens: the logit lens of both families. The top layer's lens is the model's own
prediction; an earlier layer's is checked on models whose weights are set by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labkit.inspect.lens import layer_label, logit_lens
from labkit.models import RNNConfig, TransformerConfig, build_model

from handset import Letters, by_hand

TEXT = "d b b c a d"


def random_model(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "rnn":
        return build_model(RNNConfig(vocab_size=7, cell="lstm", d_embed=6, d_hidden=6, n_layers=2, dropout=0.3)).eval()
    return build_model(TransformerConfig(vocab_size=7, d_model=8, n_layers=3, n_heads=2, d_ff=16, context_length=12,
                                         dropout=0.3)).eval()


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_the_top_layers_lens_is_the_models_own_prediction(family):
    model, tok = random_model(family), Letters(7)
    lens = logit_lens(model, tok, "g b c a f f e", top_k=3)
    ids = tok.encode("g b c a f f e")
    inputs = torch.tensor([[tok.eos_id, *ids[:-1]]])
    with torch.no_grad():
        logp = torch.log_softmax(model(inputs).logits[0].float(), -1)  # (T, V)
    L = model.config.n_layers + 1  # the embeddings, then each layer
    assert lens.layer_names == ["hook_embed" if family == "rnn" else "blocks.0.hook_resid_pre"] + [
        f"{'layers' if family == 'rnn' else 'blocks'}.{i}.{'hook_hidden' if family == 'rnn' else 'hook_resid_post'}"
        for i in range(L - 1)]
    assert [layer_label(n) for n in lens.layer_names[:2]] == ["embeddings", "layer 0" if family == "rnn" else "block 0"]
    assert lens.tokens == ["a", "g", "b", "c", "a", "f", "f"] and lens.target_tokens == list("gbcaffe")
    assert np.asarray(lens.top_probs).shape == (L, 7, 3) and lens.target_logp.shape == lens.target_rank.shape == (L, 7)
    np.testing.assert_allclose(lens.target_logp[-1], logp[torch.arange(7), ids].numpy(), atol=1e-5)
    assert lens.top_ids[-1] == logp.topk(3, -1).indices.tolist()
    np.testing.assert_allclose(lens.top_probs[-1], logp.topk(3, -1).values.exp().numpy(), atol=1e-5)
    ranks = [int((logp[t] > logp[t, ids[t]]).sum()) + 1 for t in range(7)]
    assert lens.target_rank[-1].tolist() == ranks
    assert lens.top_tokens[-1][0] == tok.id_to_token(lens.top_ids[-1][0])
    assert not np.allclose(lens.target_logp[0], lens.target_logp[-1])  # the lower layers read differently


def two_layer_transformer() -> torch.nn.Module:
    """test_hooks' hand-set block as block 0, and a block 1 that adds twice its heads' outputs."""
    model = build_model(TransformerConfig(vocab_size=4, d_model=4, n_layers=2, n_heads=2, d_ff=4, context_length=8,
                                          dropout=0.0, tie_weights=False)).eval()
    a, b = torch.tensor([1.0, 1.0, -1.0, -1.0]), torch.tensor([1.0, -1.0, 1.0, -1.0])
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in (*(m for blk in model.blocks for m in (blk.ln1, blk.ln2)), model.ln_f):
            ln.weight.fill_(1.0)
        model.tok_embed.weight.copy_(torch.stack([a, -a, b, -b], 1))
        for blk, gain in zip(model.blocks, (1.0, 2.0)):
            blk.attn.qkv.weight[8:].copy_(torch.eye(4))
            blk.attn.proj.weight.copy_(gain * torch.eye(4))
        model.head.weight.copy_(torch.eye(4))
    return model, a, b


def test_an_earlier_transformer_layer_reads_as_the_hand_computation_says():
    model, a, b = two_layer_transformer()
    tok = Letters(4)
    ids = tok.encode(TEXT)
    inputs = [tok.eos_id, *ids[:-1]]
    lens = logit_lens(model, tok, TEXT, top_k=4)
    # the embeddings row: token t's embedding is (a_t, -a_t, b_t, -b_t), zero mean and unit variance,
    # so the final LayerNorm leaves it as it is and the identity head reads it as the logits
    embedded = torch.stack([a, -a, b, -b], 1).double()[inputs]  # (T, 4)
    first = torch.log_softmax(embedded / math.sqrt(1 + 1e-5), -1)
    np.testing.assert_allclose(lens.target_logp[0], first[torch.arange(6), ids].numpy(), atol=1e-5)
    # after block 0 the stream is the hand-set one-layer model's: the final LayerNorm and the
    # identity head read out by_hand's logits
    expected = torch.log_softmax(by_hand(inputs, a, b).double(), -1)  # (T, 4)
    np.testing.assert_allclose(lens.target_logp[1], expected[torch.arange(6), ids].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.sort(lens.top_probs[1], -1)[:, ::-1], np.sort(expected.exp().numpy(), -1)[:, ::-1],
                               atol=1e-5)
    assert lens.target_rank[1].tolist() == [int((expected[t] > expected[t, ids[t]] + 1e-9).sum()) + 1 for t in range(6)]
    with torch.no_grad():
        own = torch.log_softmax(model(torch.tensor([inputs])).logits[0].double(), -1)
    np.testing.assert_allclose(lens.target_logp[2], own[torch.arange(6), ids].numpy(), atol=1e-5)
    assert np.abs(lens.target_logp[2] - lens.target_logp[1]).max() > 0.01  # block 1 changed the reading


def test_an_earlier_rnn_layer_reads_as_the_hand_computation_says():
    """A 2-layer ReLU RNN: layer 0 has W_ih = I, W_hh = alpha I (so h0_t = sum alpha^(t-k) x_k for
    positive x), layer 1 has W_ih = 2 I and no recurrence (so h1_t = 2 h0_t). No biases inside."""
    alpha = 0.5
    torch.manual_seed(0)
    model = build_model(RNNConfig(vocab_size=6, cell="rnn_relu", d_embed=3, d_hidden=3, n_layers=2, dropout=0.0)).eval()
    with torch.no_grad():
        model.embed.weight.uniform_(0.1, 1.0)
        for name, value in (("weight_ih_l0", torch.eye(3)), ("weight_hh_l0", alpha * torch.eye(3)),
                            ("weight_ih_l1", 2 * torch.eye(3)), ("weight_hh_l1", torch.zeros(3, 3))):
            getattr(model.rnn, name).copy_(value)
        for name in ("bias_ih_l0", "bias_hh_l0", "bias_ih_l1", "bias_hh_l1"):
            getattr(model.rnn, name).zero_()
    tok = Letters(6)
    text = "c e b f d"
    ids = tok.encode(text)
    inputs = [tok.eos_id, *ids[:-1]]
    x = model.embed.weight.detach().double()[inputs]
    h0 = torch.stack([sum(alpha ** (t - k) * x[k] for k in range(t + 1)) for t in range(5)])
    W, bias = model.head.weight.detach().double(), model.head.bias.detach().double()
    lens = logit_lens(model, tok, text)
    assert lens.layer_names == ["hook_embed", "layers.0.hook_hidden", "layers.1.hook_hidden"]
    for layer, h in ((0, x), (1, h0), (2, 2 * h0)):  # the embeddings, as wide as the hidden state, then each layer
        expected = torch.log_softmax(h @ W.T + bias, -1)
        np.testing.assert_allclose(lens.target_logp[layer], expected[torch.arange(5), ids].numpy(), atol=1e-5)
    assert math.isfinite(float(lens.target_logp.sum()))
