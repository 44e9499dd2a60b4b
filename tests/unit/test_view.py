"""labkit.models.view.own_modules: each session's module tree over one set of weights (the app's
classroom server). Unit tests: tiny models, no data files."""

from __future__ import annotations

import threading
import tracemalloc

import pytest
import torch

from labkit.models import (
    ClassifierConfig,
    RNNConfig,
    SequenceClassifier,
    TransformerConfig,
    build_model,
    hooks,
    own_modules,
    run_with_cache,
)

V = 31


def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    lstm = build_model(RNNConfig(vocab_size=V, cell="lstm", d_embed=8, d_hidden=8, n_layers=2, dropout=0.0,
                                 tie_weights=True)).eval()
    transformer = build_model(TransformerConfig(vocab_size=V, d_model=8, n_layers=2, n_heads=2, d_ff=16,
                                                context_length=16, dropout=0.0)).eval()
    classifier = SequenceClassifier(ClassifierConfig(body=transformer.config.to_dict())).eval()
    return {"lstm": lstm, "transformer": transformer, "classifier": classifier}


def storages(model: torch.nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}


@pytest.mark.parametrize("name", ["lstm", "transformer", "classifier"])
def test_the_copy_shares_every_weight_and_computes_the_same(name):
    model = models()[name]
    mine = own_modules(model)
    assert mine is not model and all(a is not b for a, b in zip(mine.modules(), model.modules()))
    assert [id(p) for p in mine.parameters()] == [id(p) for p in model.parameters()]  # the same tensors
    assert storages(mine) == storages(model)
    if name == "lstm":  # tied: one tensor reads and writes words, in the copy too
        assert mine.head.weight is mine.embed.weight
    x = torch.randint(V, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        if name == "classifier":
            mask = torch.ones_like(x, dtype=torch.bool)
            assert torch.equal(model(x, mask), mine(x, mask))
        else:
            assert torch.equal(model(x).logits, mine(x).logits)


def test_hooks_and_modes_stay_with_their_copy():
    model = models()["transformer"]
    mine, yours = own_modules(model), own_modules(model)
    seen = []
    x = torch.randint(V, (1, 5))
    with hooks(mine, {"hook_final": lambda value, point: seen.append(value.shape)}):
        yours(x), model(x)
        assert seen == []  # the other copy and the shared model do not fire it
        mine(x)
        assert seen == [torch.Size([1, 5, 8])]
    mine.train()
    assert not model.training and not yours.training


def test_two_sessions_read_their_own_activations_at_once():
    """Two threads, each with its copy, each hooking the same point and running its own sentence
    200 times at once: every value a thread's hook sees is its own sentence's. Without copies
    (both hooking the shared model) the hooks see each other's sentences."""
    model = models()["lstm"]
    sentences = [torch.tensor([[1, 2, 3, 4]]), torch.tensor([[5, 6, 7, 8]])]
    with torch.no_grad():
        expected = [run_with_cache(model, s, names="hook_embed")[1]["hook_embed"] for s in sentences]

    def session(network: torch.nn.Module, i: int, wrong: list[int]) -> None:
        def check(value: torch.Tensor, point) -> None:
            if not torch.equal(value, expected[i]):
                wrong[i] += 1
        with torch.no_grad(), hooks(network, {"hook_embed": check}):
            for _ in range(200):
                network(sentences[i])

    def run(networks: list[torch.nn.Module]) -> list[int]:
        wrong = [0, 0]
        threads = [threading.Thread(target=session, args=(networks[i], i, wrong)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return wrong

    assert run([own_modules(model), own_modules(model)]) == [0, 0]
    assert sum(run([model, model])) > 0  # the fault the copies remove


def test_a_copy_costs_kilobytes_not_the_weights():
    """The bytes a copy allocates do not grow with the weights: a vocabulary ten times larger
    (ten times the embedding bytes) costs the same few hundred kilobytes of module objects."""
    def cost(vocab: int) -> tuple[int, int]:
        model = build_model(TransformerConfig(vocab_size=vocab, d_model=64, n_layers=2, n_heads=4, d_ff=256,
                                              context_length=64, dropout=0.0)).eval()
        tracemalloc.start()
        mine = own_modules(model)
        size, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert storages(mine) == storages(model)
        return size, sum(p.numel() * p.element_size() for p in model.parameters())

    (small, small_weights), (large, large_weights) = cost(2_000), cost(20_000)
    assert large_weights > 5 * small_weights
    assert abs(large - small) < 16 * 1024 and large < 512 * 1024, (small, large)
