"""Batches for language modelling and classification. Batch-first `(B, T)` everywhere.

Three ways to cut a token stream:

- `batchify` + `BPTTBatches`: the classic RNN recipe (pytorch/examples word_language_model).
  The stream is cut into B contiguous rows and read left to right in windows of `bptt`
  tokens, so window k+1 continues window k in every row. The trainer carries the RNN's
  hidden state from one window to the next (detached, truncated backprop through time).
- `RandomWindows`: nanoGPT-style random-offset blocks, for Transformers (no carried state).
- `eval_windows`: non-overlapping blocks that cover a stream once, in order.
- `strided_windows`: overlapping windows that score every token once with at least a given
  amount of context (the fair evaluation of a fixed-context model).

Data-parallel training (several processes, one batch) takes rows of the same global batch:
`shard_rows(batch_size, rank, world_size)` says which; an RNN's rows are `batchify(...)[rows]`,
and `RandomWindows(..., rows=rows)` draws the whole batch's offsets and keeps those rows, so N
processes together see exactly the batches one process would.

Every iterator is deterministic given its seed and has `state_dict()` / `load_state_dict()`
holding only ints and tensors (loadable with `torch.load(weights_only=True)`), so a run can
resume mid-epoch and see exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from labkit.errors import LabkitError

Batch = tuple[torch.Tensor, torch.Tensor]


def _check_stream(stream: torch.Tensor, min_len: int) -> None:
    if not isinstance(stream, torch.Tensor) or stream.dim() != 1:
        raise LabkitError("expected a 1-D tensor of token ids")
    if stream.numel() < min_len:
        raise LabkitError(f"token stream too short: {stream.numel()} tokens, need {min_len}")


def batchify(stream: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D stream into `batch_size` contiguous rows: (N,) -> (B, N // B), tail dropped."""
    if batch_size < 1:
        raise LabkitError(f"batch_size must be >= 1, got {batch_size}")
    _check_stream(stream, batch_size)
    length = stream.numel() // batch_size
    return stream[: batch_size * length].reshape(batch_size, length).contiguous()  # (B, L)


def shard_rows(batch_size: int, rank: int, world_size: int) -> slice:
    """Rows [rank * B / N, (rank + 1) * B / N) of a global batch of B rows split over N processes."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise LabkitError(f"rank {rank} is not in a world of {world_size} processes")
    if batch_size % world_size:
        raise LabkitError(f"the batch size {batch_size} is the global batch: it must split evenly "
                          f"over {world_size} processes (choose a multiple of {world_size})")
    share = batch_size // world_size
    return slice(rank * share, (rank + 1) * share)


class BPTTBatches:
    """Windows of `bptt` steps over a batchified (B, L) tensor: yields `(x, y)`, both (B, T).

    `y` is `x` shifted one step left; the last window is shorter. `position` is the column
    where the next window starts; an epoch ends at column L - 1 and then `position` returns
    to 0. With `variable_length=True` each window's length is drawn as in AWD-LSTM
    (around `bptt`, or `bptt / 2` with probability 0.05), from a generator seeded by `seed`.
    """

    def __init__(
        self, data: torch.Tensor, bptt: int, variable_length: bool = False, seed: int = 0
    ) -> None:
        if not isinstance(data, torch.Tensor) or data.dim() != 2:
            raise LabkitError("BPTTBatches expects a (B, L) tensor from batchify()")
        if data.size(1) < 2:
            raise LabkitError("each batch row needs at least 2 tokens (an input and a target)")
        if bptt < 1:
            raise LabkitError(f"bptt must be >= 1, got {bptt}")
        self.data, self.bptt, self.variable_length = data, bptt, variable_length
        self.position = 0
        self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        """Windows per epoch (exact for fixed length, an estimate for variable length)."""
        return math.ceil((self.data.size(1) - 1) / self.bptt)

    def _next_length(self) -> int:
        if not self.variable_length:
            return self.bptt
        g = self._generator
        mean = self.bptt if torch.rand((), generator=g).item() < 0.95 else self.bptt / 2
        # AWD-LSTM: N(mean, 5), at least 5 steps; callers may rescale the lr by T / bptt.
        return max(5, round(mean + 5 * torch.randn((), generator=g).item()))

    def __iter__(self) -> Iterator[Batch]:
        last = self.data.size(1) - 1  # the final column is only ever a target
        while self.position < last:
            start = self.position
            seq_len = min(self._next_length(), last - start)
            # Advance before yielding: a checkpoint taken after this step resumes at the next one.
            self.position = start + seq_len
            x = self.data[:, start : start + seq_len].contiguous()  # (B, T)
            y = self.data[:, start + 1 : start + 1 + seq_len].contiguous()  # (B, T)
            yield x, y
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
        self._generator.set_state(state["generator"])


class RandomWindows:
    """`batch_size` windows of `block_size` tokens at random offsets in a 1-D stream.

    `sample()` returns `(x, y)`, both (B, block_size), `y` shifted one token. Offsets come from
    a `torch.Generator` seeded with `seed`; `state_dict()` stores its state and the step count,
    so a resumed run draws the same batches. Iterating yields `num_batches` batches per pass
    (forever when None). With `rows` (a slice of the batch, see `shard_rows`) all offsets are
    still drawn, so the generator's state does not depend on how the batch is shared out, but
    only those rows are returned.
    """

    def __init__(
        self,
        stream: torch.Tensor,
        block_size: int,
        batch_size: int,
        seed: int = 0,
        num_batches: int | None = None,
        rows: slice | None = None,
    ) -> None:
        if block_size < 1 or batch_size < 1:
            raise LabkitError("block_size and batch_size must be >= 1")
        _check_stream(stream, block_size + 1)
        self.stream, self.block_size, self.batch_size = stream, block_size, batch_size
        self.num_batches = num_batches
        self.rows = rows if rows is not None else slice(0, batch_size)
        self.seed = seed
        self.step = 0
        self._generator = torch.Generator().manual_seed(seed)
        self._offsets = torch.arange(block_size)

    def sample(self) -> Batch:
        high = self.stream.numel() - self.block_size  # last start that still has a target
        starts = torch.randint(high, (self.batch_size,), generator=self._generator)[self.rows]
        idx = starts[:, None] + self._offsets  # (B, T), B = this process's rows
        self.step += 1
        return self.stream[idx], self.stream[idx + 1]

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("RandomWindows without num_batches is endless")
        return self.num_batches

    def __iter__(self) -> Iterator[Batch]:
        count = 0
        while self.num_batches is None or count < self.num_batches:
            count += 1
            yield self.sample()

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "step": self.step, "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self._generator.set_state(state["generator"])


def eval_windows(stream: torch.Tensor, block_size: int, batch_size: int) -> Iterator[Batch]:
    """Non-overlapping windows covering the stream in order, batched: every target once.

    Full windows come `batch_size` at a time (the last batch may have fewer rows); a final
    shorter window, if any, comes alone as a (1, t) batch. The targets `y` of all batches,
    read in order, are exactly `stream[1:]`.
    """
    if block_size < 1 or batch_size < 1:
        raise LabkitError("block_size and batch_size must be >= 1")
    _check_stream(stream, 2)
    n_targets = stream.numel() - 1
    n_full = n_targets // block_size
    for first in range(0, n_full, batch_size):
        starts = torch.arange(first, min(first + batch_size, n_full)) * block_size
        idx = starts[:, None] + torch.arange(block_size)  # (B, T)
        yield stream[idx], stream[idx + 1]
    tail = n_full * block_size
    if tail < n_targets:
        yield stream[None, tail:n_targets], stream[None, tail + 1 :]


def strided_windows(stream: torch.Tensor, context: int, stride: int,
                    batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Sliding windows for scoring a model of fixed context (strided perplexity).

    Window k reads up to `context` tokens and scores only the targets no earlier window scored:
    its last `stride` (all of them in the first window). So every target of `stream[1:]` is
    scored exactly once, and every target scored after the first window has at least
    `context - stride` tokens of context before it. `stride = context` gives `eval_windows`'
    non-overlapping windows, whose first targets see almost no context; `stride = 1` is the
    exact figure, one window per target. Yields `(x, y, scored)`: equal-length windows batched
    (B, T), and how many of each row's last targets count.
    """
    if not 1 <= stride <= context or batch_size < 1:
        raise LabkitError(f"the stride must be in [1, context = {context}] and batch_size >= 1, "
                          f"got {stride} and {batch_size}")
    _check_stream(stream, 2)
    n = stream.numel() - 1  # targets
    windows, scored_up_to = [], 0
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        windows.append((begin, end - begin, end - scored_up_to))
        scored_up_to = end
        if end == n:
            break
    offsets = torch.arange(context)
    for i in range(0, len(windows), batch_size):
        group = windows[i:i + batch_size]
        for length, scored in dict.fromkeys((w[1], w[2]) for w in group):  # equal shapes batch together
            starts = torch.tensor([b for b, t, s in group if (t, s) == (length, scored)])
            idx = starts[:, None] + offsets[:length]  # (B, T)
            yield stream[idx], stream[idx + 1], scored


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad id lists to (B, T); returns `(ids, lengths, mask)`, mask True on real tokens.

    T is the longest length (at least 1, so an all-empty batch still has a column); an empty
    sequence gets length 0 and an all-False mask row.
    """
    if len(seqs) == 0:
        raise LabkitError("pad_batch needs at least one sequence")
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)  # (B,)
    width = max(1, int(lengths.max()))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    for row, seq in enumerate(seqs):
        if len(seq):
            ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    mask = torch.arange(width)[None, :] < lengths[:, None]  # (B, T)
    return ids, lengths, mask


@dataclass
class ClassificationBatch:
    ids: torch.Tensor  # (B, T) token ids, right-padded
    lengths: torch.Tensor  # (B,)
    mask: torch.Tensor  # (B, T) True on real tokens
    labels: torch.Tensor  # (B,)

    def to(self, device: torch.device | str) -> ClassificationBatch:
        tensors = (self.ids, self.lengths, self.mask, self.labels)
        return ClassificationBatch(*(t.to(device) for t in tensors))


class ClassificationBatches:
    """Padded batches of `(token_ids, label)` examples.

    With `shuffle`, epoch e uses a permutation seeded by (seed, e), so every epoch differs but
    is reproducible. Iteration starts at `position` (a batch index) of `epoch`; finishing an
    epoch moves to the next. `state_dict()` holds both, for mid-epoch resume.
    """

    def __init__(
        self,
        examples: Sequence[tuple[Sequence[int], int]],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pad_id: int = 0,
        max_len: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise LabkitError(f"batch_size must be >= 1, got {batch_size}")
        if max_len is not None and max_len < 1:
            raise LabkitError(f"max_len must be >= 1 or None, got {max_len}")
        if len(examples) == 0:
            raise LabkitError("no examples to batch")
        self.examples, self.batch_size = examples, batch_size
        self.shuffle, self.seed, self.pad_id, self.max_len = shuffle, seed, pad_id, max_len
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)

    def order(self, epoch: int) -> list[int]:
        """Example indices in the order epoch `epoch` visits them."""
        if not self.shuffle:
            return list(range(len(self.examples)))
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        return torch.randperm(len(self.examples), generator=g).tolist()

    def __iter__(self) -> Iterator[ClassificationBatch]:
        order = self.order(self.epoch)
        while self.position < len(self):
            start = self.position * self.batch_size
            chosen = [self.examples[i] for i in order[start : start + self.batch_size]]
            self.position += 1  # advance first: a checkpoint after this step resumes after it
            seqs = [list(ids)[: self.max_len] for ids, _ in chosen]
            ids, lengths, mask = pad_batch(seqs, self.pad_id)
            labels = torch.tensor([int(label) for _, label in chosen], dtype=torch.long)
            yield ClassificationBatch(ids, lengths, mask, labels)
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
