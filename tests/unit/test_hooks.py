"""labkit.models.hooks: named hook points in both families, read (run_with_cache) and replaced
(hooks, zero_head, zero_units, gradient_at), checked against models whose weights are set by hand.
Unit tests: tiny models, no data files."""

from __future__ import annotations

import math
import re

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
    hook_points,
    hooks,
    run_with_cache,
)
from labkit.models.hooks import gradient_at, has_hooks, zero_head, zero_units
from labkit.models.transformer import causal_mask

from handset import by_hand, hand_set_rnn, hand_set_transformer

V = 23


def rnn(cell: str = "lstm", n_layers: int = 2, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(RNNConfig(vocab_size=V, cell=cell, d_embed=6, d_hidden=5, n_layers=n_layers,
                                 dropout=0.0, **kw)).eval()


def transformer(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    base = dict(vocab_size=V, d_model=8, n_layers=2, n_heads=2, d_ff=16, context_length=12, dropout=0.0)
    return build_model(TransformerConfig(**{**base, **kw})).eval()


def ids(T: int = 7, B: int = 3) -> torch.Tensor:
    return torch.randint(V, (B, T), generator=torch.Generator().manual_seed(1))


# --- reading: run_with_cache ---------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_run_with_cache_reads_every_point_of_an_rnn(cell):
    model, x = rnn(cell), ids()
    plain = model(x)
    out, cache = run_with_cache(model, x)
    per_layer = {"rnn_tanh": ["hook_hidden"],
                 "lstm": ["hook_hidden", "hook_cell", "hook_gate_input", "hook_gate_forget", "hook_gate_candidate",
                          "hook_gate_output"],
                 "gru": ["hook_hidden", "hook_gate_reset", "hook_gate_update", "hook_gate_candidate"]}[cell]
    assert set(cache) == {"hook_embed", "hook_final", "hook_logits"} | {f"layers.{i}.{p}" for i in range(2) for p in per_layer}
    assert cache["hook_embed"].shape == (3, 7, 6)
    assert all(cache[f"layers.{i}.{p}"].shape == (3, 7, 5) for i in range(2) for p in per_layer)  # steps stacked
    torch.testing.assert_close(cache["hook_final"], plain.hidden, atol=1e-6, rtol=0)
    torch.testing.assert_close(cache["hook_logits"], plain.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits, plain.logits, atol=1e-5, rtol=0)
    # the top layer's h_t is the output (dropout 0), and its last step the state handed on
    torch.testing.assert_close(cache["layers.1.hook_hidden"], cache["hook_final"])
    h_n = plain.state[0] if cell == "lstm" else plain.state
    torch.testing.assert_close(cache.stack("hook_hidden")[:, :, -1], h_n, atol=1e-6, rtol=0)  # (layers, B, H)
    with torch.inference_mode():
        _, again = run_with_cache(model, x, names="layers.*.hook_hidden")
    torch.testing.assert_close(again.stack("hook_hidden"), cache.stack("hook_hidden"))
    if cell == "lstm":  # c_t = f c_{t-1} + i g and h_t = o tanh(c_t), read back from the points
        c = cache["layers.0.hook_cell"]
        gates = {g: cache[f"layers.0.hook_gate_{g}"] for g in ("input", "forget", "candidate", "output")}
        torch.testing.assert_close(c[:, 1:], gates["forget"][:, 1:] * c[:, :-1] + (gates["input"] * gates["candidate"])[:, 1:])
        torch.testing.assert_close(cache["layers.0.hook_hidden"], gates["output"] * torch.tanh(c))


def test_run_with_cache_reads_every_point_of_a_transformer():
    model, x = transformer(), ids()
    plain = model(x)
    out, cache = run_with_cache(model, x)
    block = ["hook_resid_pre", "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid", "hook_mlp_out",
             "hook_resid_post"]
    assert set(cache) == {"hook_embed", "hook_final", "hook_logits"} | {f"blocks.{i}.{p}" for i in range(2) for p in block}
    shapes = {"attn.hook_pattern": (3, 2, 7, 7), "attn.hook_z": (3, 2, 7, 4)}
    assert all(cache[f"blocks.{i}.{p}"].shape == shapes.get(p, (3, 7, 8)) for i in range(2) for p in block)
    torch.testing.assert_close(cache["hook_final"], plain.hidden, atol=1e-6, rtol=0)
    torch.testing.assert_close(cache["hook_logits"], plain.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits, plain.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(cache["hook_embed"], model.tok_embed(x))
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], model.tok_embed(x) + model.pos_embed.weight[:7])
    for i in range(2):  # the residual stream adds up
        point = {p: cache[f"blocks.{i}.hook_{p}"] for p in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")}
        torch.testing.assert_close(point["resid_mid"], point["resid_pre"] + point["attn_out"])
        torch.testing.assert_close(point["resid_post"], point["resid_mid"] + point["mlp_out"])
    patterns = cache.stack("attn.hook_pattern")  # (layers, B, heads, T, S)
    assert patterns.shape == (2, 3, 2, 7, 7)
    torch.testing.assert_close(patterns.sum(-1), torch.ones(2, 3, 2, 7))
    assert patterns.masked_select(~causal_mask(7, 7)).abs().max() == 0
    # z is the pattern applied to the values (layer 0's values from its LayerNorm's output)
    attn = model.blocks[0].attn
    v = attn.qkv(model.blocks[0].ln1(cache["blocks.0.hook_resid_pre"]))[..., 16:].view(3, 7, 2, 4).transpose(1, 2)
    torch.testing.assert_close(cache["blocks.0.attn.hook_z"], patterns[0] @ v, atol=1e-6, rtol=0)


def test_names_pick_points_by_exact_name_glob_or_predicate():
    model, x = transformer(), ids()
    assert list(run_with_cache(model, x, names="blocks.*.attn.hook_pattern")[1]) == \
        ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    assert set(run_with_cache(model, x, names=["hook_final", "blocks.1.*"])[1]) == \
        {"hook_final", *(f"blocks.1.{p}" for p in ("hook_resid_pre", "attn.hook_pattern", "attn.hook_z", "hook_attn_out",
                                                    "hook_resid_mid", "hook_mlp_out", "hook_resid_post"))}
    assert list(run_with_cache(model, x, names=lambda n: n.endswith("hook_mlp_out"))[1]) == \
        ["blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]
    assert not has_hooks(model)
    with pytest.raises(KeyError, match="kind"):
        run_with_cache(model, x, names="hook_final")[1].stack("attn.hook_pattern")


def test_a_classifier_body_and_every_grad_mode_and_the_kv_cache():
    body = transformer()
    classifier = SequenceClassifier(ClassifierConfig(body=body.config.to_dict()))
    classifier.body.load_state_dict(body.state_dict())
    x = ids()
    _, expected = run_with_cache(body, x, names="blocks.*.attn.hook_pattern")
    _, cache = run_with_cache(classifier.eval().body, x, names="blocks.*.attn.hook_pattern")
    torch.testing.assert_close(cache.stack("attn.hook_pattern"), expected.stack("attn.hook_pattern"))
    assert "body.blocks.0.attn.hook_z" in hook_points(classifier)  # from the outside: the path through it
    for mode in (torch.no_grad, torch.inference_mode, torch.enable_grad):
        with mode():
            _, cache = run_with_cache(body, x, names="hook_final")
        torch.testing.assert_close(cache["hook_final"], expected_final(body, x))
        assert not cache["hook_final"].requires_grad
    _, kept = run_with_cache(body, x, names="hook_final", detach=False)
    assert kept["hook_final"].requires_grad
    kv = body.new_cache()
    run_with_cache(body, x[:, :5], state=kv, names="blocks.*.attn.hook_pattern")
    out, step = run_with_cache(body, x[:, 5:6], state=kv, names="blocks.*.attn.hook_pattern")
    assert out.state is kv and kv.length == 6
    torch.testing.assert_close(step.stack("attn.hook_pattern"), expected.stack("attn.hook_pattern")[:, :, :, 5:6, :6])


def expected_final(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).hidden


# --- the RNN's recurrence, spelled out ------------------------------------------------------------
@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_the_explicit_recurrence_computes_what_the_fused_kernel_computes(cell, n_layers):
    model, x = rnn(cell, n_layers), ids(T=9)
    state = model.init_hidden(3)
    state = tuple(torch.randn_like(s) for s in state) if cell == "lstm" else torch.randn_like(state)
    fused = model(x, state)
    steps = []

    def watch(value: torch.Tensor, point) -> None:
        steps.append(point.step)

    with hooks(model, {"layers.0.hook_hidden": watch}):  # a hook under layers.: the explicit loop runs
        explicit = model(x, state)
    assert steps == list(range(9))
    torch.testing.assert_close(explicit.logits, fused.logits, atol=1e-5, rtol=0)
    for a, b in zip(*((s,) if cell != "lstm" else s for s in (explicit.state, fused.state))):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert all(p.step is None for p in hook_points(model).values())


# --- replacing ------------------------------------------------------------------------------------
def test_a_replacement_hook_changes_the_output_and_is_removed_afterwards():
    model, x = transformer(), ids()
    before = model(x).logits

    def silence(value: torch.Tensor, point) -> torch.Tensor:
        assert point.name == "hook_final"
        return torch.zeros_like(value)

    with hooks(model, {"hook_final": silence}) as hooked:
        assert hooked is model and has_hooks(model)
        torch.testing.assert_close(model(x).logits, torch.zeros_like(before))  # the head has no bias
    assert not has_hooks(model)
    torch.testing.assert_close(model(x).logits, before)
    with pytest.raises(RuntimeError, match="boom"), hooks(model, {"blocks.*.hook_resid_post": silence}):
        raise RuntimeError("boom")
    assert not has_hooks(model)
    with pytest.raises(LabkitError, match="no hook point matches 'blocks.9.attn.hook_z'"):
        with hooks(model, {"hook_final": silence, "blocks.9.attn.hook_z": silence}):
            pass
    assert not has_hooks(model)  # the hooks registered before the bad name are gone too


@pytest.mark.parametrize("old, now", [("blocks.0.attn.pattern", "blocks.0.attn.hook_pattern"),
                                      ("blocks.*.attn.z", "blocks.*.attn.hook_z"),
                                      ("blocks.1.attn.out", "blocks.1.hook_attn_out"),
                                      ("blocks.0.mlp.out", "blocks.0.hook_mlp_out"),
                                      ("blocks.0.resid_post", "blocks.0.hook_resid_post"),
                                      ("final", "hook_final"), ("logits", "hook_logits"),
                                      ("layers.0.hidden", "layers.0.hook_hidden"),
                                      ("layers.1.gates.forget", "layers.1.hook_gate_forget")])
def test_a_name_from_before_the_hook_prefix_gets_todays_name(old, now):
    model = rnn("lstm") if old.startswith("layers") else transformer()
    assert now in hook_points(model) or any(n.startswith(now.split("*")[0]) for n in hook_points(model))
    with pytest.raises(LabkitError, match=rf"hook points are named hook_\* now .*use {re.escape(repr(now))}"):
        with hooks(model, {old: lambda value, point: None}):
            pass
    with pytest.raises(LabkitError, match="this model has"):  # a name that never was one: the list
        with hooks(model, {"blocks.0.attn.scores": lambda value, point: None}):
            pass
    _, cache = run_with_cache(model, ids(), names=now)
    if "*" not in now and not old.startswith("layers.1"):
        with pytest.raises(KeyError, match="named hook_"):
            cache.stack(old.split(".", 2)[-1])


@pytest.mark.parametrize("fast", [True, False])
def test_zeroing_a_head_of_a_hand_set_transformer(fast):
    model, a, b = hand_set_transformer()
    if not fast:
        model = build_model(model.config, fast=False).eval()
        model.load_state_dict(hand_set_transformer()[0].state_dict())
    tokens = [0, 3, 1, 1, 2, 0]
    x = torch.tensor([tokens])
    full, cache = run_with_cache(model, x, names="blocks.0.hook_resid_post")
    torch.testing.assert_close(full.logits[0], by_hand(tokens, a, b), atol=1e-5, rtol=0)
    residual = {}
    for off, heads in ((0, (False, True)), (1, (True, False))):
        with hooks(model, zero_head(0, off)):
            ablated, seen = run_with_cache(model, x, names="blocks.0.hook_resid_post")
        torch.testing.assert_close(ablated.logits[0], by_hand(tokens, a, b, heads), atol=1e-5, rtol=0)
        torch.testing.assert_close(full.logits - ablated.logits, by_hand(tokens, a, b)[None] - by_hand(tokens, a, b, heads)[None],
                                   atol=1e-5, rtol=0)
        residual[off] = cache["blocks.0.hook_resid_post"] - seen["blocks.0.hook_resid_post"]
    # in the residual stream each head's share is exactly what it wrote, in its own two dimensions
    k = 1 / math.sqrt(1 + 1e-5)
    means = torch.cumsum(torch.stack([a[tokens], b[tokens]], 1), 0) / torch.arange(1, 7)[:, None]  # (T, 2)
    torch.testing.assert_close(residual[0][0], k * torch.stack([means[:, 0], -means[:, 0], 0 * means[:, 0], 0 * means[:, 0]], 1))
    torch.testing.assert_close(residual[1][0], k * torch.stack([0 * means[:, 1], 0 * means[:, 1], means[:, 1], -means[:, 1]], 1))
    with hooks(model, zero_head(0, [0, 1])):  # both off: the shares add up
        _, both = run_with_cache(model, x, names="blocks.0.hook_resid_post")
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"] - both["blocks.0.hook_resid_post"], residual[0] + residual[1])
    with hooks(model, zero_head(0, 0, positions=[2])):  # one position only: only its row changes
        at_two = model(x).logits
    torch.testing.assert_close(at_two[0, 2], by_hand(tokens, a, b, (False, True))[2], atol=1e-5, rtol=0)
    keep = [0, 1, 3, 4, 5]
    torch.testing.assert_close(at_two[0, keep], full.logits[0, keep])


def test_zeroing_a_unit_of_a_hand_set_rnn_reaches_later_steps_through_the_recurrence():
    alpha, j, t0 = 0.5, 1, 2
    model = hand_set_rnn(alpha)
    tokens = [2, 4, 1, 5, 3, 0]
    x = torch.tensor([tokens])
    e = model.embed.weight.detach()[tokens]  # (T, 3)
    W = model.head.weight.detach()  # (V, 3)
    full = model(x).logits[0]
    with hooks(model, zero_units(model, 0, j, positions=[t0])):
        ablated = model(x).logits[0]
    # h_t0[j] = 0; later h_t[j] = x_t[j] + alpha h_{t-1}[j] lose alpha^(t - t0) h_t0[j]
    expected = torch.zeros(6, 6)
    h_t0 = sum(alpha ** (t0 - k) * e[k, j] for k in range(t0 + 1))
    for t in range(t0, 6):
        expected[t] = W[:, j] * alpha ** (t - t0) * h_t0
    torch.testing.assert_close(full - ablated, expected, atol=1e-6, rtol=0)
    assert (full - ablated)[t0 + 1:].abs().sum() > 0  # the steps after t0 feel it: the ablation is real
    with hooks(model, zero_units(model, 0, [0, 2])):  # every step: those units stay zero throughout
        _, cache = run_with_cache(model, x, names="layers.0.hook_hidden")
    h = cache["layers.0.hook_hidden"][0]
    assert h[:, [0, 2]].abs().max() == 0
    torch.testing.assert_close(h[:, 1], torch.tensor([sum(alpha ** (t - k) * e[k, 1] for k in range(t + 1))
                                                      for t in range(6)]))


def test_zero_units_of_a_transformer_reads_the_residual_stream():
    model, x = transformer(), ids()
    with hooks(model, zero_units(model, 0, [1, 3], positions=[4])):
        _, cache = run_with_cache(model, x, names=["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"])
    assert cache["blocks.1.hook_resid_pre"][:, 4, [1, 3]].abs().max() == 0  # the next block reads the zeros
    assert cache["blocks.1.hook_resid_pre"][:, 3, [1, 3]].abs().min() > 0


# --- gradients at a point ----------------------------------------------------------------------------
def test_gradient_at_a_point_of_each_family():
    alpha = 0.5
    model = hand_set_rnn(alpha)
    x, y = torch.tensor([[2, 4, 1, 5]]), 3
    W = model.head.weight.detach()
    with gradient_at(model, "layers.0.hook_hidden") as h:  # per step: the total derivative through later steps
        f = model(x).logits[0, -1, y]
        grad = h.grad(f)  # (1, T, H)
    assert h.value.shape == grad.shape == (1, 4, 3)
    expected = torch.stack([alpha ** (3 - t) * W[y] for t in range(4)])
    torch.testing.assert_close(grad[0], expected)
    t = transformer()
    with gradient_at(t, "hook_final") as final:
        f = t(ids()).logits[1, 2, y]
        grad = final.grad(f)  # (B, T, C): the output layer's row y, at that one position
    expected = torch.zeros(3, 7, 8)
    expected[1, 2] = t.head.weight[y].detach()
    torch.testing.assert_close(grad, expected)
    assert not has_hooks(t)
    with pytest.raises(LabkitError, match="no hook point"), gradient_at(t, "blocks.*.attn.hook_z"):
        pass
