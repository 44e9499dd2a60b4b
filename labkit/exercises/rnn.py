"""Notebook 02's exercises on the recurrence: one RNN step and an LSTM cell, both checked against
labkit's own cell (`RNNLM.step`) on the same weights, and one window of truncated backpropagation
through time with the state detached and the gradients clipped."""

from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from labkit.exercises.core import Mistake, exercise, expect
from labkit.models import RNNConfig, build_model

RECURRENCE = "## 1. The recurrence, by hand"
TRAINING = "## 3. Pretraining, with a live curve"
IMPORTS = "import torch"


def rnn_model(cell: str, seed: int = 0, d_embed: int = 3, d_hidden: int = 4) -> torch.nn.Module:
    """A small one-layer plain RNN language model with random weights (biases too), dropout off."""
    torch.manual_seed(seed)
    model = build_model(RNNConfig(vocab_size=11, cell=cell, d_embed=d_embed, d_hidden=d_hidden, n_layers=1,
                                  dropout=0.0), fast=False).eval()
    with torch.no_grad():
        for name, p in model.rnn.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-0.5, 0.5)  # torch starts them small: a missing bias must show
    return model


def rnn_step(x: torch.Tensor, h: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One step of a vanilla tanh RNN: h_t = tanh(x_t W_xh^T + h_{t-1} W_hh^T + b).
    x (B, E), h (B, H); W_xh (H, E) and W_hh (H, H) as torch stores them (out, in); b (H,)."""
    return torch.tanh(x @ W_xh.T + h @ W_hh.T + b)


@exercise("02.rnn_step", rnn_step, after=RECURRENCE, imports=IMPORTS, title="one step of an RNN", intro=r"""
    The whole vanilla RNN is one line, applied at every position:
    $h_t = \tanh(W_{xh} x_t + W_{hh} h_{t-1} + b)$. Write it for a batch of rows (`x` is (B, E), `h` is (B, H)).
    torch stores a weight matrix as (out, in), so a batch of row vectors is multiplied by its transpose.
    The check compares your step with labkit's RNN (`RNNLM.step`) on the same weights.""", hint="""
    x @ W_xh.T is (B, H), and so is h @ W_hh.T; add them and b, then torch.tanh.""")
def check_rnn_step(fn):
    model = rnn_model("rnn_tanh")
    rnn = model.rnn
    W_xh, W_hh, b = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0
    x, h = torch.randn(2, 3, generator=torch.Generator().manual_seed(1)), torch.rand(2, 4) - 0.5
    by_hand = (torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([[2.0]]), torch.tensor([[-1.0]]),
               torch.tensor([0.25]))  # tanh(2 - 0.5 + 0.25) = tanh(1.75) = 0.9414
    cases = [(by_hand, torch.tanh(torch.tensor([[1.75]])), "the 1-unit case by hand"),
             ((x, h, W_xh.detach(), W_hh.detach(), b.detach()), model.step(0, x, h, h)[0].detach(),
              "labkit's RNN step on its own weights")]
    for args, want, what in cases:
        x_, h_, wx, wh, b_ = args
        with torch.no_grad():
            got = fn(*(a.clone() for a in args))
        expect(got, want, what=what, known={
            "the tanh is missing: h_t = tanh(...)": x_ @ wx.T + h_ @ wh.T + b_,
            "the previous state h_{t-1} was not used: add h @ W_hh.T": torch.tanh(x_ @ wx.T + b_),
            "W_hh is used untransposed: torch stores (out, in), so multiply rows by W_hh.T": torch.tanh(
                x_ @ wx.T + h_ @ wh + b_),
            "the bias b is missing": torch.tanh(x_ @ wx.T + h_ @ wh.T)})
    return len(cases)


def lstm_cell(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, W_ih: torch.Tensor, W_hh: torch.Tensor,
              b_ih: torch.Tensor, b_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of an LSTM with torch's weights: W_ih (4H, E), W_hh (4H, H), b_ih and b_hh (4H,)
    stack the gates in the order i, f, g, o. Returns the new (h, c), each (B, H):
    i, f, o = sigmoid(...), g = tanh(...); c_t = f * c_{t-1} + i * g; h_t = o * tanh(c_t)."""
    gates = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)  # each (B, H)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _lstm_mistake(x, h, c, W_ih, W_hh, b_ih, b_hh, mistake: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What `lstm_cell` returns with one known mistake."""
    gates = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh
    i, f, g, o = gates.chunk(4, dim=1)
    if mistake == "ifog":
        i, f, o, g = gates.chunk(4, dim=1)
    i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
    g = torch.sigmoid(g) if mistake == "sigmoid_g" else torch.tanh(g)
    if mistake == "swap_fi":
        i, f = f, i
    c = f * c + i * g
    return o * (c if mistake == "no_tanh" else torch.tanh(c)), c


@exercise("02.lstm_cell", lstm_cell, after=RECURRENCE, imports=IMPORTS, title="an LSTM cell", intro=r"""
    An LSTM keeps a cell state $c_t$ beside $h_t$ and three gates decide what flows:
    $i, f, o = \sigma(\cdot)$ (input, forget, output), a candidate $g = \tanh(\cdot)$, then
    $c_t = f \odot c_{t-1} + i \odot g$ and $h_t = o \odot \tanh(c_t)$. torch computes all four from one
    matrix product, stacked in the order i, f, g, o. The check compares your cell with labkit's LSTM
    (`RNNLM.step`) on the same weights.""", hint="""
    gates = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh is (B, 4H); gates.chunk(4, dim=1) gives i, f, g, o in that
    order. Sigmoid on i, f, o; tanh on g; then c = f * c + i * g and h = o * tanh(c).""")
def check_lstm_cell(fn):
    cases = []
    for seed in (0, 1):
        model = rnn_model("lstm", seed)
        r = model.rnn
        weights = (r.weight_ih_l0.detach(), r.weight_hh_l0.detach(), r.bias_ih_l0.detach(), r.bias_hh_l0.detach())
        gen = torch.Generator().manual_seed(seed + 10)
        x, h, c = torch.randn(3, 3, generator=gen), torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
        with torch.no_grad():
            cases.append(((x, h, c, *weights), tuple(t.detach() for t in model.step(0, x, h, c))))
    for args, want in cases:
        with torch.no_grad():
            got = fn(*(a.clone() for a in args))
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Mistake(f"return the pair (h, c), got {type(got).__name__}")
        expect(tuple(got), want, what="(h, c) against labkit's LSTM on the same weights", known={
            "the gates are in the wrong order: torch stacks them i, f, g, o (the candidate third)":
                _lstm_mistake(*args, "ifog"),
            "h_t = o * tanh(c_t): the tanh on the cell is missing": _lstm_mistake(*args, "no_tanh"),
            "the candidate g takes a tanh, not a sigmoid (it may be negative)": _lstm_mistake(*args, "sigmoid_g"),
            "the forget gate multiplies the old cell, the input gate the candidate: f * c + i * g":
                _lstm_mistake(*args, "swap_fi")},
            otherwise="h right but c wrong (or the reverse)? c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t)")
    return len(cases)


def train_window(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 state, clip: float) -> tuple[float, object]:
    """One training step on one bptt window (truncated backpropagation through time): run the model
    on x (B, T) from `state`, the cross-entropy of its logits (B, T, V) against the targets y (B, T),
    zero the gradients, backpropagate, clip the gradients' total norm to `clip`, step the
    optimizer. Returns the loss as a float and the new state, detached from this window's graph
    (labkit's models: `out = model(x, state)`, `out.logits`, `out.state`, `model.detach_state`)."""
    out = model(x, state)
    loss = F.cross_entropy(out.logits.flatten(0, 1), y.flatten())
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item(), model.detach_state(out.state)


def _train_mistake(model, optimizer, x, y, state, clip, mistake: str):
    """What `train_window` does with one known mistake. (A state left attached is not among them:
    torch refuses to backpropagate into the previous window, whose graph is freed or stale.)"""
    out = model(x, None if mistake == "no_carry" else state)
    loss = F.cross_entropy(out.logits.flatten(0, 1), y.flatten())
    if mistake != "no_zero":
        optimizer.zero_grad()
    loss.backward()
    if mistake != "no_clip":
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item(), model.detach_state(out.state)


def _two_windows(step, model, clip: float) -> tuple[list[float], torch.Tensor]:
    """Run `step` on two consecutive windows with a fresh copy of `model`: the losses, then every
    parameter after them, flattened."""
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    stream = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4, 3, 3]).view(2, -1)  # (B, 13)
    state, losses = model.init_hidden(2), []
    for start in (0, 5):
        loss, state = step(model, optimizer, stream[:, start:start + 5], stream[:, start + 1:start + 6], state, clip)
        losses.append(float(loss))
    return losses, torch.cat([p.detach().flatten() for p in model.parameters()])


@exercise("02.tbptt", train_window, after=TRAINING, imports="import torch\nfrom torch.nn import functional as F",
          title="truncated BPTT: detach and clip", intro="""
    The trainer feeds consecutive windows of the same rows and carries the hidden state from one to the next,
    so the model reads an unbroken text. Backpropagation must stop at the window's start, or every step
    would reach back through the whole text read so far: the state is **detached** from the graph. And an
    RNN's gradients can explode: their total norm is **clipped** before the optimizer steps. Write one
    step; the check runs two windows in a row and compares the losses and the weights with labkit's recipe.""",
          hint="""
    out = model(x, state); loss = F.cross_entropy(out.logits.flatten(0, 1), y.flatten()); then
    optimizer.zero_grad(), loss.backward(), torch.nn.utils.clip_grad_norm_(model.parameters(), clip),
    optimizer.step(). Return loss.item() and model.detach_state(out.state).""")
def check_tbptt(fn):
    model = rnn_model("lstm", 3, d_embed=5, d_hidden=6)
    want_losses, want_weights = _two_windows(train_window, model, 0.1)
    try:
        got_losses, got_weights = _two_windows(fn, model, 0.1)
    except RuntimeError as e:
        if "second time" in str(e) or "modified by an inplace operation" in str(e):
            raise Mistake("the state was not detached: gradients flow into the previous window, whose graph "
                          "is gone (torch: 'Trying to backward through the graph a second time'). Return "
                          "model.detach_state(out.state).") from None
        raise
    messages = {"no_clip": "the gradients were not clipped before optimizer.step(): call "
                           "torch.nn.utils.clip_grad_norm_(model.parameters(), clip) between backward() and step()",
                "no_zero": "the gradients were not zeroed: they add up across windows (optimizer.zero_grad())",
                "no_carry": "the state was not carried: pass `state` into the model, so window 2 continues window 1"}
    runs: dict[str, tuple[list[float], torch.Tensor]] = {}

    def mistaken(kind: str, part: int):  # each mistake's run, made once and only when the answer is wrong
        if kind not in runs:
            runs[kind] = _two_windows(lambda *a: _train_mistake(*a, kind), model, 0.1)
        return runs[kind][part]

    expect(got_losses, want_losses, what="the losses of two consecutive windows",
           known={message: lambda m=m: mistaken(m, 0) for m, message in messages.items()},
           otherwise="the loss is the mean cross-entropy of out.logits against y, over every position")
    expect(got_weights, want_weights, what="the weights after two windows (SGD, lr 0.5, clip 0.1)",
           known={message: lambda m=m: mistaken(m, 1) for m, message in messages.items()},
           otherwise="zero the gradients, backward, clip, then step, once per window")
    return 2
