"""Recurrent language models: vanilla RNN (tanh or ReLU), LSTM and GRU.

The recurrence, for one layer of a vanilla RNN:

    h_t = f(W_xh x_t + W_hh h_{t-1} + b)        f = tanh or ReLU

An LSTM adds gates and a cell state c_t so gradients can survive long spans; a GRU does the
same with two gates and no separate cell. All three share one module here: embedding -> stacked
recurrent layers -> dropout -> linear output layer over the vocabulary.

The state is carried between calls: the trainer feeds consecutive bptt windows of the same
streams and passes the returned state back in (detached), so the model sees an unbroken text.

torch's fused kernels (nn.LSTM, nn.GRU, nn.RNN) run the recurrence; `RNNLM.recurrence` spells the
same equations out step by step with the same weights, and runs instead while a hook sits on one
of the per-step points (h_t, c_t, the gates: see labkit.models.hooks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from labkit.config import JSONConfig
from labkit.models.hooks import HookPoint, has_hooks, hook_points
from labkit.models.output import LMOutput, check_output, head_flops, head_logits, make_head

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")

RNNState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # h, or (h, c) for an LSTM


@dataclass
class RNNConfig(JSONConfig):
    vocab_size: int = 33_278
    cell: str = "lstm"
    d_embed: int = 200
    d_hidden: int = 200
    n_layers: int = 2
    dropout: float = 0.2
    tie_weights: bool = False  # needs d_embed == d_hidden
    output: str = "softmax"  # softmax (exact) | adaptive (Grave et al. 2017; see models/output.py)
    adaptive_cutoffs: tuple[int, ...] = ()  # cluster boundaries; () = about 6% and 30% of the vocabulary
    family: str = "rnn"

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.tie_weights and self.d_embed != self.d_hidden:
            raise ValueError("tie_weights needs d_embed == d_hidden "
                             f"(got {self.d_embed} and {self.d_hidden})")
        if min(self.vocab_size, self.d_embed, self.d_hidden, self.n_layers) < 1:
            raise ValueError("vocab_size, d_embed, d_hidden and n_layers must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.adaptive_cutoffs = tuple(self.adaptive_cutoffs)
        check_output(self.output, self.adaptive_cutoffs, self.vocab_size, self.tie_weights)

    def approximate_parameters(self) -> int:
        """The parameter count from the config alone (the big matrices; biases aside)."""
        gates = {"lstm": 4, "gru": 3}.get(self.cell, 1)
        n = self.vocab_size * self.d_embed + (0 if self.tie_weights else self.d_hidden * self.vocab_size)
        return n + sum(gates * self.d_hidden * ((self.d_embed if i == 0 else self.d_hidden) + self.d_hidden)
                       for i in range(self.n_layers))


GATES = {"lstm": ("input", "forget", "candidate", "output"), "gru": ("reset", "update", "candidate")}


class LayerPoints(nn.Module):
    """The hook points of one recurrent layer, each called once per time step with a (B, H) value."""

    def __init__(self, cell: str):
        super().__init__()
        self.hook_hidden = HookPoint()  # h_t
        if cell == "lstm":
            self.hook_cell = HookPoint()  # c_t
        for gate in GATES.get(cell, ()):
            setattr(self, f"hook_gate_{gate}", HookPoint())  # hook_gate_input, ...


class RNNLM(nn.Module):
    carries_state = True  # the state returned by one call continues the text in the next
    default_pooling = "last"  # for a classifier on top: the last state has read the whole sentence
    context_length = None  # reads any length

    def __init__(self, config: RNNConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_embed)
        self.hook_embed = HookPoint()  # (B, T, E): the embedding layer's output
        self.drop = nn.Dropout(c.dropout)
        between = c.dropout if c.n_layers > 1 else 0.0  # torch warns on dropout with 1 layer
        if c.cell == "lstm":
            self.rnn = nn.LSTM(c.d_embed, c.d_hidden, c.n_layers, dropout=between, batch_first=True)
        elif c.cell == "gru":
            self.rnn = nn.GRU(c.d_embed, c.d_hidden, c.n_layers, dropout=between, batch_first=True)
        else:
            self.rnn = nn.RNN(c.d_embed, c.d_hidden, c.n_layers, dropout=between,
                              nonlinearity=c.cell.removeprefix("rnn_"), batch_first=True)
        self.head = make_head(c.d_hidden, c.vocab_size, c.output, c.adaptive_cutoffs, bias=True)
        if c.tie_weights:
            # Press & Wolf (2017): one matrix both reads and writes words; fewer parameters,
            # usually lower perplexity.
            self.head.weight = self.embed.weight
        self.layers = nn.ModuleList(LayerPoints(c.cell) for _ in range(c.n_layers))
        self.hook_final = HookPoint()  # (B, T, H)
        self.hook_logits = HookPoint()  # (B, T, V)
        hook_points(self)  # tell every point its name
        self._init_weights()

    def _init_weights(self) -> None:
        # The classic word-LM initialisation: small uniform embeddings, zero output bias.
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        if isinstance(self.head, nn.Linear):
            if not self.config.tie_weights:
                nn.init.uniform_(self.head.weight, -0.1, 0.1)
            nn.init.zeros_(self.head.bias)

    @property
    def width(self) -> int:
        """The width of the hidden states the output layer (or a classifier) reads."""
        return self.config.d_hidden

    def init_hidden(self, batch_size: int, device: torch.device | str | None = None) -> RNNState:
        c = self.config
        device = device or self.embed.weight.device
        h = torch.zeros(c.n_layers, batch_size, c.d_hidden, device=device)  # (L, B, H)
        return (h, torch.zeros_like(h)) if c.cell == "lstm" else h

    @staticmethod
    def detach_state(state: RNNState | None) -> RNNState | None:
        """Cut the graph at a window boundary (truncated backpropagation through time)."""
        if state is None:
            return None
        if isinstance(state, tuple):
            return tuple(s.detach() for s in state)  # type: ignore[return-value]
        return state.detach()

    def encode(self, idx: torch.Tensor, state: RNNState | None = None) -> tuple[torch.Tensor, RNNState]:
        """Token ids (B, T) -> hidden states of the top layer (B, T, H) and the new state."""
        if state is None:
            state = self.init_hidden(idx.size(0), idx.device)
        x = self.drop(self.hook_embed(self.embed(idx)))  # (B, T, E)
        if has_hooks(self.layers):
            h, state = self.recurrence(x, state)  # spelled out, so that every step meets the points
        else:
            h, state = self.rnn(x, state)  # (B, T, H): torch's fused kernel
        return self.hook_final(self.drop(h)), state

    def recurrence(self, x: torch.Tensor, state: RNNState) -> tuple[torch.Tensor, RNNState]:
        """What `self.rnn(x, state)` computes, one step and one layer at a time, with its weights;
        the points of `self.layers` see every step and may replace h_t, c_t or a gate, which the
        next step and the layer above then read. x (B, T, E) -> top-layer h (B, T, H), new state."""
        lstm = self.config.cell == "lstm"
        h0, c0 = state if lstm else (state, state)  # a GRU or vanilla RNN has no cell: c is unused
        h, c = list(h0.unbind(0)), list(c0.unbind(0))  # per layer (B, H)
        between = self.rnn.dropout if self.training else 0.0  # torch's dropout between layers
        points = [p for p in self.layers.modules() if isinstance(p, HookPoint)]
        top = []
        try:
            for t in range(x.size(1)):
                for point in points:
                    point.step = t
                inp = x[:, t]  # (B, E)
                for k in range(len(h)):
                    h[k], c[k] = self.step(k, inp, h[k], c[k])
                    inp = F.dropout(h[k], between, True) if between and k < len(h) - 1 else h[k]
                top.append(h[-1])
        finally:
            for point in points:
                point.step = None
        h_n = torch.stack(h)  # (L, B, H)
        return torch.stack(top, 1), ((h_n, torch.stack(c)) if lstm else h_n)

    def step(self, k: int, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step of layer k: input x (B, in), previous h and c (B, H) -> new h and c.
        PyTorch stacks the gates' weights in the order i, f, g, o (LSTM) and r, z, n (GRU)."""
        rnn, points = self.rnn, self.layers[k]
        gi = F.linear(x, getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"bias_ih_l{k}"))  # (B, G*H) from x_t
        gh = F.linear(h, getattr(rnn, f"weight_hh_l{k}"), getattr(rnn, f"bias_hh_l{k}"))  # (B, G*H) from h_{t-1}
        cell = self.config.cell
        if cell == "lstm":
            i, f, g, o = (gi + gh).chunk(4, dim=1)  # each (B, H)
            i = points.hook_gate_input(torch.sigmoid(i))  # how much of the candidate to write
            f = points.hook_gate_forget(torch.sigmoid(f))  # how much of the old cell to keep
            g = points.hook_gate_candidate(torch.tanh(g))  # what to write
            o = points.hook_gate_output(torch.sigmoid(o))  # how much of the cell to show
            c = points.hook_cell(f * c + i * g)  # c_t = f * c_{t-1} + i * g
            h = o * torch.tanh(c)  # h_t = o * tanh(c_t)
        elif cell == "gru":
            r_x, z_x, n_x = gi.chunk(3, dim=1)
            r_h, z_h, n_h = gh.chunk(3, dim=1)
            r = points.hook_gate_reset(torch.sigmoid(r_x + r_h))  # how much of h_{t-1} the candidate reads
            z = points.hook_gate_update(torch.sigmoid(z_x + z_h))  # how much of h_{t-1} to keep
            n = points.hook_gate_candidate(torch.tanh(n_x + r * n_h))
            h = (1 - z) * n + z * h  # h_t
        else:
            h = (torch.tanh if cell == "rnn_tanh" else torch.relu)(gi + gh)  # h_t = f(W_xh x_t + W_hh h_{t-1} + b)
        return points.hook_hidden(h), c

    def forward(self, idx: torch.Tensor, state: RNNState | None = None, *,
                compute_logits: bool = True) -> LMOutput:
        hidden, state = self.encode(idx, state)
        logits = self.hook_logits(self.logits(hidden)) if compute_logits else None  # (B, T, V)
        return LMOutput(logits=logits, hidden=hidden, state=state)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer: hidden states (..., H) -> logits (..., V)."""
        return head_logits(self.head, hidden)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters from the top layer down to the embeddings, for gradual unfreezing (the
        output layer is left out: a classifier does not use it)."""
        groups = [[p for name, p in self.rnn.named_parameters() if name.endswith(f"_l{k}")]
                  for k in reversed(range(self.config.n_layers))]
        groups.append([self.embed.weight])
        return groups

    def flops_per_token(self, context: int | None = None) -> int:
        """Forward FLOPs per token: 2 per multiply-add of every matrix product."""
        c = self.config
        gates = {"lstm": 4, "gru": 3}.get(c.cell, 1)
        recurrent = 0
        for layer in range(c.n_layers):
            d_in = c.d_embed if layer == 0 else c.d_hidden
            recurrent += 2 * gates * c.d_hidden * (d_in + c.d_hidden)
        return recurrent + head_flops(c.d_hidden, c.vocab_size, c.output, c.adaptive_cutoffs)
