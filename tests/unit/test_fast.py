"""labkit.models.fast: the speed paths compute what the plain models compute. Plain and fast
models with the same weights give the same logits and gradients (train mode with dropout 0, eval
mode, the KV cache, a hook on the attention pattern or on a head), and the state dict is the
same. Unit tests: tiny models, no data files."""

from __future__ import annotations

import pytest
import torch

from labkit.models import ClassifierConfig, RNNConfig, TransformerConfig, build_model, hooks, run_with_cache
from labkit.models.fast import (
    DecodeLinear,
    FastCausalSelfAttention,
    FastDropout,
    accelerate,
    dropout,
    transposed_weight,
)
from labkit.models.hooks import zero_head

V = 41
CONFIGS = {
    "transformer": TransformerConfig(vocab_size=V, d_model=16, n_layers=2, n_heads=4, d_ff=32, context_length=16,
                                     dropout=0.0),
    "transformer-untied-1-head": TransformerConfig(vocab_size=V, d_model=12, n_layers=3, n_heads=1, d_ff=24,
                                                   context_length=16, dropout=0.0, tie_weights=False),
    "transformer-adaptive": TransformerConfig(vocab_size=V, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                              context_length=16, dropout=0.0, tie_weights=False, output="adaptive",
                                              adaptive_cutoffs=(10, 20)),
    "lstm": RNNConfig(vocab_size=V, cell="lstm", d_embed=12, d_hidden=12, n_layers=2, dropout=0.0, tie_weights=True),
    "gru": RNNConfig(vocab_size=V, cell="gru", d_embed=8, d_hidden=10, n_layers=1, dropout=0.0),
    "rnn_tanh": RNNConfig(vocab_size=V, cell="rnn_tanh", d_embed=8, d_hidden=8, n_layers=2, dropout=0.0),
}
TOL = dict(atol=2e-5, rtol=1e-4)


def pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    fast = build_model(CONFIGS[name])
    with torch.no_grad():  # no parameter left at its initial zeros (the biases): each one shows
        for p in fast.parameters():
            p.add_(0.05 * torch.randn_like(p))
    plain = build_model(CONFIGS[name], fast=False)
    plain.load_state_dict(fast.state_dict())
    return plain, fast


def ids(B: int = 3, T: int = 14) -> torch.Tensor:
    return torch.randint(V, (B, T), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("name", CONFIGS)
def test_the_fast_model_is_the_plain_one_with_other_classes(name):
    plain, fast = pair(name)
    assert list(plain.state_dict()) == list(fast.state_dict())
    assert not any(isinstance(m, (FastDropout, DecodeLinear, FastCausalSelfAttention)) for m in plain.modules())
    assert any(isinstance(m, FastDropout) for m in fast.modules())
    if name.startswith("transformer"):
        assert all(isinstance(b.attn, FastCausalSelfAttention) for b in fast.blocks)
    if name.endswith("adaptive"):  # the adaptive softmax keeps its own layers
        assert not any(isinstance(m, DecodeLinear) for m in fast.head.modules())
    assert accelerate(fast) is fast and list(fast.state_dict()) == list(plain.state_dict())  # twice: no change


@pytest.mark.parametrize("name", CONFIGS)
def test_same_logits_and_gradients_in_train_and_eval_mode(name):
    plain, fast = pair(name)
    x, y = ids(), ids().roll(1, 1)
    for train in (True, False):
        losses = []
        for model in (plain, fast):
            model.train(train)
            model.zero_grad()
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), y.flatten())
            loss.backward()
            losses.append((out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        (a, ga), (b, gb) = losses
        torch.testing.assert_close(b, a, **TOL)
        for n in ga:
            torch.testing.assert_close(gb[n], ga[n], **TOL, msg=f"gradient of {n}")
    with torch.inference_mode():  # and decoding-sized calls (the transposed output layer)
        for T in (1, 3):
            torch.testing.assert_close(fast(x[:1, :T]).logits, plain(x[:1, :T]).logits, **TOL)


@pytest.mark.parametrize("name", ["transformer", "transformer-untied-1-head"])
def test_the_kv_cache_gives_the_same_logits(name):
    plain, fast = (m.eval() for m in pair(name))
    x = ids()
    with torch.inference_mode():
        full = plain(x).logits
        for model in (plain, fast):
            cache = model.new_cache()
            pieces = [model(x[:, :5], cache).logits, model(x[:, 5:9], cache).logits]  # prefill, then a chunk
            pieces += [model(x[:, t:t + 1], cache).logits for t in range(9, 14)]  # one token at a time
            torch.testing.assert_close(torch.cat(pieces, 1), full, **TOL)


@pytest.mark.parametrize("train", [True, False])
def test_a_hook_on_the_pattern_or_a_head_is_honoured_on_the_fast_path(train):
    plain, fast = (m.train(train) for m in pair("transformer"))
    x = ids()
    (a, pa), (b, pb) = (run_with_cache(m, x, names="blocks.*.attn.hook_pattern") for m in (plain, fast))
    torch.testing.assert_close(b.logits, a.logits, **TOL)
    torch.testing.assert_close(pb.stack("attn.hook_pattern"), pa.stack("attn.hook_pattern"), **TOL)
    # a head switched off, with no hook on the pattern: the fused kernel's output goes through z
    with hooks(plain, zero_head(1, 2)), hooks(fast, zero_head(1, 2)):
        off_plain, off_fast = plain(x).logits, fast(x).logits
    torch.testing.assert_close(off_fast, off_plain, **TOL)
    assert (off_fast - b.logits).abs().max() > 1e-4
    with torch.inference_mode(), hooks(plain.eval(), zero_head(0, 1)), hooks(fast.eval(), zero_head(0, 1)):
        cache_plain, cache_fast = plain.new_cache(), fast.new_cache()
        plain(x[:, :8], cache_plain), fast(x[:, :8], cache_fast)
        torch.testing.assert_close(fast(x[:, 8:9], cache_fast).logits, plain(x[:, 8:9], cache_plain).logits, **TOL)


def test_a_classifier_body_is_fast_unless_asked():
    config = ClassifierConfig(body=CONFIGS["transformer"].to_dict())
    assert isinstance(build_model(config).body.blocks[0].attn, FastCausalSelfAttention)
    assert type(build_model(config, fast=False).body.blocks[0].attn).__name__ == "CausalSelfAttention"
    assert type(build_model(config).drop) is torch.nn.Dropout  # the classifier's own layers stay as they are


def test_fast_dropout_keeps_the_distribution():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    out = dropout(x, 0.25)
    kept = (out != 0).float().mean().item()
    assert abs(kept - 0.75) < 0.005  # 200k draws: the standard error is 0.001
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / 0.75))
    assert dropout(x, 0.25, training=False) is x and dropout(x, 0.0) is x
    bf = dropout(torch.ones(1000, dtype=torch.bfloat16), 0.5)
    assert bf.dtype == torch.bfloat16 and set(bf.unique().tolist()) <= {0.0, 2.0}


def test_the_transposed_decode_weight_follows_the_weight():
    torch.manual_seed(0)
    layer = accelerate(torch.nn.Sequential(torch.nn.Linear(8, 5)))[0]
    assert type(layer) is torch.nn.Linear  # only language models are accelerated
    layer.__class__ = DecodeLinear
    x = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ layer.weight.T + layer.bias)
        first = transposed_weight(layer)
        assert transposed_weight(layer) is first  # kept while the weight is unchanged
        layer.weight.mul_(2)  # an optimizer step, a load: the copy is made again
        torch.testing.assert_close(layer(x), x @ layer.weight.T + layer.bias)


def test_load_run_gives_the_plain_model_to_edit_when_asked(tmp_path):
    """`load_run(path, fast=False)`: the classes of transformer.py, whose forward a student may edit,
    with the run's weights: the same logits as the fast model it loads by default."""
    from labkit.data import WordTokenizer
    from labkit.models.transformer import CausalSelfAttention
    from labkit.runs import RunDir, load_run

    tok = WordTokenizer.train(["the cat sat on the mat"] * 3, split="whitespace", specials=("<unk>", "<eos>"))
    torch.manual_seed(0)
    model = build_model(TransformerConfig(vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                          context_length=8, dropout=0.0))
    run = RunDir(tmp_path / "run")
    run.create(tok, {"kind": "lm", "model": model.config.to_dict()})
    run.save_best(model, {})
    fast, plain = load_run(run.root).model, load_run(run.root, fast=False).model
    assert type(fast.blocks[0].attn) is FastCausalSelfAttention
    assert type(plain.blocks[0].attn) is CausalSelfAttention
    x = torch.tensor([[2, 3, 4, 5, 2, 6]])
    assert torch.allclose(fast(x).logits, plain(x).logits, atol=1e-5)


@pytest.mark.parametrize("family", ["transformer", "lstm"])
def test_the_fast_path_with_dropout_is_the_plain_one_with_the_same_masks(family):
    """Dropout 0.3 in train mode: each of the plain model's nn.Dropout layers is given the mask
    labkit.models.fast.dropout draws (a forward hook, the same seed for both models; the layer's own
    rate set to 0 so that it draws nothing itself), and the fast
    model, its own dropout and attention kernel included, computes the same logits and gradients:
    every mask is drawn at the same place, in the same order, on the same shape."""
    from labkit.models.fast import dropout

    config = CONFIGS["transformer" if family == "transformer" else "lstm"].replace(dropout=0.3)
    torch.manual_seed(0)
    fast = build_model(config).train()
    plain = build_model(config, fast=False).train()
    plain.load_state_dict(fast.state_dict())
    for m in plain.modules():
        if type(m) is torch.nn.Dropout:  # its own draw off (p 0 draws nothing), fast's mask instead
            m.p, m.drawn_p = 0.0, m.p
            m.register_forward_hook(lambda mod, inputs, out: dropout(inputs[0], mod.drawn_p, mod.training))
    x, y = ids(), ids().roll(1, 1)
    results = []
    for model in (plain, fast):
        torch.manual_seed(1)
        model.zero_grad()
        logits = model(x).logits
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(b, a, **TOL)
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], **TOL, msg=f"gradient of {n}")
    with torch.no_grad():  # and the masks were drawn: without them the logits differ
        assert not torch.allclose(fast.eval()(x).logits, a, atol=1e-3)
