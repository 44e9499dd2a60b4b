"""Fair evaluation: a model of fixed context is scored with sliding windows (strided perplexity),
every token once and each with at least context - stride tokens before it; an RNN carries its
state. Checked on a model whose loss depends only on how much context it has, computed by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from labkit.data import LMData, WordTokenizer
from labkit.data.batching import strided_windows
from labkit.models import LMOutput, RNNConfig, build_model
from labkit.train import TrainConfig, Trainer

V = 10


class KnowsMoreLater(nn.Module):
    """A "language model" of the counting stream 0 1 2 ... 9 0 1 ...: at position t of its window
    it puts logit t on the right next token and 0 on the other V - 1, so its loss there is
    loss(t) = -log(e^t / (e^t + V - 1)): it depends only on how much context it has read."""

    carries_state = False

    def __init__(self, context: int):
        super().__init__()
        self.context_length = context
        self.config = SimpleNamespace(family="transformer")
        self.head = nn.Linear(V, V, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(V))

    def forward(self, idx: torch.Tensor, state=None, *, compute_logits: bool = True) -> LMOutput:
        B, T = idx.shape
        position = torch.arange(T, dtype=torch.float32).expand(B, T)  # (B, T)
        hidden = nn.functional.one_hot((idx + 1) % V, V).float() * position[..., None]  # (B, T, V)
        return LMOutput(logits=self.head(hidden) if compute_logits else None, hidden=hidden)


def loss_at(t: int) -> float:
    return -math.log(math.exp(t) / (math.exp(t) + V - 1))


def evaluate(model: nn.Module, targets: int, context: int, stride: int | None) -> dict:
    stream = torch.arange(targets + 1) % V
    tokenizer = WordTokenizer.train([" ".join(map(str, range(V)))], split="whitespace", specials=("<eos>",))
    data = LMData(tokenizer, stream.repeat(3), stream, stream, {"train": 1.0, "valid": 1.0, "test": 1.0})
    config = TrainConfig(seq_len=context, eval_stride=stride, eval_batch_size=3, device="cpu", precision="fp32")
    return Trainer(model, data, config).evaluate("valid")


def test_strided_perplexity_is_the_hand_computed_figure_and_the_old_one_is_biased():
    C, S, k = 8, 2, 30  # targets: one whole window, then 30 more windows of 2 new targets each
    n = C + k * S
    strided = evaluate(KnowsMoreLater(C), n, C, S)
    by_hand = (sum(loss_at(t) for t in range(C)) + k * sum(loss_at(t) for t in range(C - S, C))) / n
    assert strided["tokens"] == n
    assert strided["loss"] == pytest.approx(by_hand, rel=1e-5)
    # non-overlapping windows (stride = context): every position 0..C-1 equally often
    old = evaluate(KnowsMoreLater(C), 9 * C, C, C)
    assert old["loss"] == pytest.approx(sum(loss_at(t) for t in range(C)) / C, rel=1e-5)
    assert old["loss"] > 2.5 * strided["loss"]  # biased against the model: its early tokens see nothing
    exact = evaluate(KnowsMoreLater(C), n, C, 1)  # stride 1: every token after the first window at t = C - 1
    assert exact["loss"] == pytest.approx((sum(loss_at(t) for t in range(C)) + (n - C) * loss_at(C - 1)) / n,
                                          rel=1e-5)


def test_strided_windows_score_every_target_once_with_enough_context():
    stream = torch.arange(1, 102)  # 100 targets
    seen = []
    for x, y, scored in strided_windows(stream, context=16, stride=5, batch_size=4):
        assert torch.equal(y, x + 1)
        for row_x, row_y in zip(x, y):
            targets = row_y[-scored:].tolist()
            seen += targets
            context_before = [row_x.size(0) - scored + i for i in range(scored)]  # tokens read before each target
            if targets[0] > 16:
                assert min(context_before) >= 16 - 5
    assert sorted(seen) == list(range(2, 102))  # stream[1:], each once
    with pytest.raises(Exception, match="stride"):
        list(strided_windows(stream, 16, 17, 4))


def test_an_rnn_scores_the_same_tokens_carrying_its_state():
    torch.manual_seed(0)
    model = build_model(RNNConfig(vocab_size=V, d_embed=4, d_hidden=4, n_layers=1, dropout=0.0))
    result = evaluate(model, 8 + 30 * 2, 8, 2)
    assert result["tokens"] == 68
    stream = torch.arange(69) % V
    with torch.no_grad():  # one pass over the whole text: what carrying the state through windows equals
        logits = model.eval()(stream[None, :-1]).logits[0]
        whole = nn.functional.cross_entropy(logits, stream[1:]).item()
    assert result["loss"] == pytest.approx(whole, rel=1e-4)
