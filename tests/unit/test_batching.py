"""Unit tests for labkit.data.batching (tiny tensors, no data files)."""

from __future__ import annotations

import io
import itertools

import pytest
import torch

from labkit.data.batching import (
    BPTTBatches,
    ClassificationBatches,
    RandomWindows,
    batchify,
    eval_windows,
    pad_batch,
)
from labkit.errors import LabkitError


def _roundtrip(state: dict) -> dict:
    """Save and reload a state dict the way checkpoints do (weights_only)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# -- batchify / BPTT -------------------------------------------------------------------------------
def test_batchify_makes_contiguous_rows_and_drops_tail():
    data = batchify(torch.arange(23), 4)
    assert data.shape == (4, 5)
    assert data[1].tolist() == [5, 6, 7, 8, 9]  # row b is the b-th contiguous chunk
    with pytest.raises(LabkitError):
        batchify(torch.arange(3), 4)
    with pytest.raises(LabkitError):
        batchify(torch.arange(12).view(3, 4), 2)


def test_bptt_windows_are_contiguous_and_shifted():
    data = batchify(torch.arange(100), 4)  # (4, 25)
    batches = BPTTBatches(data, bptt=7)
    windows = list(batches)
    assert len(windows) == len(batches) == 4  # 24 input columns: 7 + 7 + 7 + 3
    assert [x.shape for x, _ in windows] == [(4, 7), (4, 7), (4, 7), (4, 3)]
    for x, y in windows:
        assert torch.equal(y, x + 1)  # stream is arange, so the shift shows as +1
        assert x.is_contiguous() and y.is_contiguous()
    # each row reads its stream without gaps across consecutive windows
    rows = torch.cat([x for x, _ in windows], dim=1)
    assert torch.equal(rows, data[:, :-1])
    assert batches.position == 0  # epoch finished, ready for the next


def test_bptt_resume_mid_epoch_gives_identical_batches():
    data = batchify(torch.randint(0, 50, (500,), generator=torch.Generator().manual_seed(0)), 5)
    for variable in (False, True):
        a = BPTTBatches(data, bptt=8, variable_length=variable, seed=3)
        it = iter(a)
        for _ in range(3):
            next(it)
        state = _roundtrip(a.state_dict())
        assert state["position"] == a.position > 0
        rest = list(it)
        b = BPTTBatches(data, bptt=8, variable_length=variable, seed=3)
        b.load_state_dict(state)
        resumed = list(b)
        assert len(resumed) == len(rest) > 0
        assert all(torch.equal(x1, x2) and torch.equal(y1, y2)
                   for (x1, y1), (x2, y2) in zip(rest, resumed))


def test_bptt_variable_length_is_seeded_and_covers_stream():
    data = batchify(torch.arange(2000), 2)
    lengths = lambda seed: [x.size(1) for x, _ in BPTTBatches(data, 10, True, seed)]  # noqa: E731
    assert lengths(1) == lengths(1) and lengths(1) != lengths(2)
    assert sum(lengths(1)) == data.size(1) - 1
    assert min(lengths(1)[:-1]) >= 5


def test_bptt_rejects_bad_input():
    with pytest.raises(LabkitError):
        BPTTBatches(torch.arange(10), bptt=3)
    with pytest.raises(LabkitError):
        BPTTBatches(torch.zeros(2, 1, dtype=torch.long), bptt=3)
    with pytest.raises(LabkitError):
        BPTTBatches(torch.zeros(2, 5, dtype=torch.long), bptt=0)


# -- random windows ------------------------------------------------------------------------------
def test_random_windows_shapes_shift_and_bounds():
    stream = torch.arange(50)
    sampler = RandomWindows(stream, block_size=8, batch_size=6, seed=0)
    for _ in range(20):
        x, y = sampler.sample()
        assert x.shape == y.shape == (6, 8)
        assert torch.equal(y, x + 1)
        assert torch.equal(x[:, 1:], x[:, :-1] + 1)  # each row is a contiguous window
        assert int(y.max()) <= 49
    assert sampler.step == 20
    # the tightest case: exactly one possible window
    x, y = RandomWindows(torch.arange(5), 4, 3).sample()
    assert x.tolist() == [[0, 1, 2, 3]] * 3
    with pytest.raises(LabkitError):
        RandomWindows(torch.arange(4), 4, 3)


def test_random_windows_seeded_and_resumable():
    stream = torch.randint(0, 100, (1000,), generator=torch.Generator().manual_seed(1))
    draw = lambda s, n: [s.sample()[0] for _ in range(n)]  # noqa: E731
    a, b = RandomWindows(stream, 16, 4, seed=7), RandomWindows(stream, 16, 4, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(draw(a, 5), draw(b, 5)))
    assert not torch.equal(RandomWindows(stream, 16, 4, seed=8).sample()[0],
                           RandomWindows(stream, 16, 4, seed=7).sample()[0])
    state = _roundtrip(a.state_dict())
    expected = draw(a, 5)
    c = RandomWindows(stream, 16, 4, seed=123)  # the seed argument is overridden by the state
    c.load_state_dict(state)
    assert c.step == 5
    assert all(torch.equal(p, q) for p, q in zip(expected, draw(c, 5)))


def test_random_windows_iteration():
    sampler = RandomWindows(torch.arange(100), 8, 2, num_batches=3)
    assert len(sampler) == 3 and len(list(sampler)) == 3 and sampler.step == 3
    endless = RandomWindows(torch.arange(100), 8, 2)
    assert len(list(itertools.islice(endless, 10))) == 10
    with pytest.raises(TypeError):
        len(endless)


@pytest.mark.parametrize("n, block, batch", [(21, 5, 3), (20, 5, 2), (2, 4, 1), (100, 7, 50)])
def test_eval_windows_cover_every_target_once(n, block, batch):
    stream = torch.arange(n) * 3
    batches = list(eval_windows(stream, block, batch))
    ys = torch.cat([y.reshape(-1) for _, y in batches])
    xs = torch.cat([x.reshape(-1) for x, _ in batches])
    assert torch.equal(ys, stream[1:]) and torch.equal(xs, stream[:-1])
    assert all(x.shape == y.shape and x.size(0) <= batch and x.size(1) <= block for x, y in batches)


# -- classification --------------------------------------------------------------------------------
def test_pad_batch_ids_lengths_mask():
    ids, lengths, mask = pad_batch([[5, 6, 7], [8], []], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1], [1, 1, 1]]
    assert lengths.tolist() == [3, 1, 0]
    assert mask.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    assert mask.dtype == torch.bool and ids.dtype == lengths.dtype == torch.long
    assert pad_batch([[]], 0)[0].shape == (1, 1)
    with pytest.raises(LabkitError):
        pad_batch([], 0)


EXAMPLES = [(list(range(i + 1)), i % 2) for i in range(10)]  # example i has i + 1 tokens


def test_classification_batches_shapes_and_truncation():
    batches = list(ClassificationBatches(EXAMPLES, 4, shuffle=False, pad_id=99, max_len=5))
    assert [b.ids.shape for b in batches] == [(4, 4), (4, 5), (2, 5)]
    first = batches[0]
    assert first.lengths.tolist() == [1, 2, 3, 4] and first.labels.tolist() == [0, 1, 0, 1]
    assert torch.equal(first.mask, first.ids != 99)
    assert batches[2].lengths.tolist() == [5, 5]  # truncated to max_len
    moved = first.to("cpu")
    assert torch.equal(moved.ids, first.ids)


def test_classification_shuffle_is_seeded_per_epoch():
    def epoch_labels(seed: int, epochs: int) -> list[list[int]]:
        loader = ClassificationBatches(EXAMPLES, 3, seed=seed)
        return [[int(b.lengths.sum()) for b in loader] for _ in range(epochs)]

    a = epoch_labels(0, 3)
    assert a == epoch_labels(0, 3)  # deterministic given the seed
    assert a[0] != a[1]  # a different order each epoch
    assert a != epoch_labels(1, 3)
    loader = ClassificationBatches(EXAMPLES, 3, seed=0)
    seen = sorted(int(i) for b in loader for i in b.lengths)
    assert seen == list(range(1, 11)) and loader.epoch == 1  # every example once per epoch


def test_classification_resume_mid_epoch():
    a = ClassificationBatches(EXAMPLES, 3, seed=5)
    list(a)  # finish epoch 0
    it = iter(a)
    next(it)
    state = _roundtrip(a.state_dict())
    assert state == {"epoch": 1, "position": 1}
    rest = list(it)
    b = ClassificationBatches(EXAMPLES, 3, seed=5)
    b.load_state_dict(state)
    resumed = list(b)
    assert len(rest) == len(resumed) == 3
    assert all(torch.equal(p.ids, q.ids) and torch.equal(p.labels, q.labels)
               for p, q in zip(rest, resumed))


def test_classification_rejects_bad_arguments():
    with pytest.raises(LabkitError):
        ClassificationBatches([], 2)
    with pytest.raises(LabkitError):
        ClassificationBatches(EXAMPLES, 0)
    with pytest.raises(LabkitError):
        ClassificationBatches(EXAMPLES, 2, max_len=0)
