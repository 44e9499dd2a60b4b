"""Recurrent language models: vanilla RNN (tanh or ReLU), LSTM and GRU.

The recurrence, for one layer of a vanilla RNN:

    h_t = f(W_xh x_t + W_hh h_{t-1} + b)        f = tanh or ReLU

An LSTM adds gates and a cell state c_t so gradients can survive long spans; a GRU does the
same with two gates and no separate cell. All three share one module here: embedding -> stacked
recurrent layers -> dropout -> linear output layer over the vocabulary.

The state is carried between calls: the trainer feeds consecutive bptt windows of the same
streams and passes the returned state back in (detached), so the model sees an unbroken text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from labkit.config import JSONConfig
from labkit.models.dropout import Dropout
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


class RNNLM(nn.Module):
    def __init__(self, config: RNNConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_embed)
        self.drop = Dropout(c.dropout)
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
        self._init_weights()

    def _init_weights(self) -> None:
        # The classic word-LM initialisation: small uniform embeddings, zero output bias.
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        if isinstance(self.head, nn.Linear):
            if not self.config.tie_weights:
                nn.init.uniform_(self.head.weight, -0.1, 0.1)
            nn.init.zeros_(self.head.bias)

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
        x = self.drop(self.embed(idx))  # (B, T, E)
        h, state = self.rnn(x, state)  # (B, T, H)
        return self.drop(h), state

    def forward(self, idx: torch.Tensor, state: RNNState | None = None, *,
                compute_logits: bool = True, **_: object) -> LMOutput:
        hidden, state = self.encode(idx, state)
        logits = self.logits(hidden) if compute_logits else None  # (B, T, V)
        return LMOutput(logits=logits, hidden=hidden, state=state)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer: hidden states (..., H) -> logits (..., V)."""
        return head_logits(self.head, hidden)

    def flops_per_token(self, context: int | None = None) -> int:
        """Forward FLOPs per token: 2 per multiply-add of every matrix product."""
        c = self.config
        gates = {"lstm": 4, "gru": 3}.get(c.cell, 1)
        recurrent = 0
        for layer in range(c.n_layers):
            d_in = c.d_embed if layer == 0 else c.d_hidden
            recurrent += 2 * gates * c.d_hidden * (d_in + c.d_hidden)
        return recurrent + head_flops(c.d_hidden, c.vocab_size, c.output, c.adaptive_cutoffs)
