"""The plain way to train these models, the yardstick of `labkit bench`.

Written the way a textbook or the classic PyTorch word-language-model example writes it: eager
fp32, the full logits tensor materialized and handed to `F.cross_entropy`, the hidden state
detached ("repackaged") before every batch, attention spelled out with a mask, the default
(per-tensor) optimizer. The models compute exactly what labkit's do: `load_labkit_weights` copies
a labkit model's weights in, and tests check that the losses agree.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from labkit.data.batching import BPTTBatches, batchify, eval_windows
from labkit.models import RNNConfig, TransformerConfig


class ReferenceLSTM(nn.Module):
    def __init__(self, c: RNNConfig):
        super().__init__()
        self.drop = nn.Dropout(c.dropout)
        self.encoder = nn.Embedding(c.vocab_size, c.d_embed)
        self.rnn = nn.LSTM(c.d_embed, c.d_hidden, c.n_layers, dropout=c.dropout if c.n_layers > 1 else 0.0,
                           batch_first=True)
        self.decoder = nn.Linear(c.d_hidden, c.vocab_size)
        if c.tie_weights:
            self.decoder.weight = self.encoder.weight
        self.config = c

    def init_hidden(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        weight = next(self.parameters())
        return (weight.new_zeros(c.n_layers, batch_size, c.d_hidden),
                weight.new_zeros(c.n_layers, batch_size, c.d_hidden))

    def forward(self, x: torch.Tensor, hidden: Any) -> tuple[torch.Tensor, Any]:
        emb = self.drop(self.encoder(x))
        output, hidden = self.rnn(emb, hidden)
        return self.decoder(self.drop(output)), hidden  # (B, T, V): every logit, in fp32


class ReferenceBlock(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.n_heads = c.n_heads
        self.ln1, self.ln2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.attn_proj = nn.Linear(c.d_model, c.d_model)
        self.fc = nn.Linear(c.d_model, c.d_ff)
        self.mlp_proj = nn.Linear(c.d_ff, c.d_model)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        hs = C // self.n_heads
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, nh, T, T)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device))
        att = self.drop(F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.drop(self.attn_proj(y))
        return x + self.drop(self.mlp_proj(F.gelu(self.fc(self.ln2(x)))))


class ReferenceTransformer(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.tok = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = nn.Embedding(c.context_length, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(ReferenceBlock(c) for _ in range(c.n_layers))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.decoder = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.decoder.weight = self.tok.weight

    def forward(self, x: torch.Tensor, hidden: Any = None) -> tuple[torch.Tensor, None]:
        pos = torch.arange(x.size(1), device=x.device)
        h = self.drop(self.tok(x) + self.pos(pos))
        for block in self.blocks:
            h = block(h)
        return self.decoder(self.ln_f(h)), None  # (B, T, V)


def build_reference(config: RNNConfig | TransformerConfig) -> nn.Module:
    if config.family == "transformer":
        return ReferenceTransformer(config)
    if config.cell != "lstm" or config.output != "softmax":
        raise ValueError("the reference implements the LSTM and the Transformer with a full softmax")
    return ReferenceLSTM(config)


RENAMES = {"embed.": "encoder.", "head.": "decoder.", "tok_embed.": "tok.", "pos_embed.": "pos.",
           ".attn.qkv.": ".qkv.", ".attn.proj.": ".attn_proj.", ".mlp.fc.": ".fc.", ".mlp.proj.": ".mlp_proj."}


def load_labkit_weights(reference: nn.Module, labkit_model: nn.Module) -> None:
    """Copy a labkit model's weights into the reference (same architecture, other names)."""
    state = {}
    for name, tensor in labkit_model.state_dict().items():
        for old, new in RENAMES.items():
            name = name.replace(old, new) if old.startswith(".") or name.startswith(old) else name
        state[name] = tensor
    reference.load_state_dict(state)


class ReferenceTrainer:
    """One optimizer step at a time, the plain way. `lr` is set by the caller before each step
    (the benchmark gives every variant the same schedule)."""

    def __init__(self, model: nn.Module, train: torch.Tensor, recipe: dict[str, Any], family: str):
        self.model, self.family = model, family
        self.batch_size, self.seq_len = recipe["batch_size"], recipe["seq_len"]
        self.grad_clip = recipe["grad_clip"]
        if recipe["optimizer"] == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=recipe["lr"])
        else:
            self.optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], betas=(0.9, 0.95),
                                               weight_decay=recipe["weight_decay"])
        n = train.numel() // self.batch_size
        self.data = train[:n * self.batch_size].view(self.batch_size, n)  # (B, n): B streams
        self.position = 0
        self.hidden: Any = None
        self.generator = torch.Generator().manual_seed(recipe.get("seed", 0))
        self.tokens_seen = 0

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.seq_len
        if self.family == "rnn":  # consecutive windows of the streams
            if self.position + T + 1 > self.data.size(1):
                self.position, self.hidden = 0, None
            x = self.data[:, self.position:self.position + T]
            y = self.data[:, self.position + 1:self.position + T + 1]
            self.position += T
            return x, y
        flat = self.data.reshape(-1)  # random windows
        starts = torch.randint(0, flat.numel() - T - 1, (self.batch_size,), generator=self.generator)
        x = torch.stack([flat[s:s + T] for s in starts.tolist()])
        y = torch.stack([flat[s + 1:s + T + 1] for s in starts.tolist()])
        return x, y

    def step(self, lr: float) -> float:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self.batch()
        if self.family == "rnn":
            if self.hidden is None:
                self.hidden = self.model.init_hidden(x.size(0))
            self.hidden = tuple(h.detach() for h in self.hidden)  # repackage: cut the graph
        self.optimizer.zero_grad()
        logits, self.hidden = self.model(x, self.hidden)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.tokens_seen += y.numel()
        return loss.item()

    @torch.no_grad()
    def evaluate(self, stream: torch.Tensor, batch_size: int = 10) -> float:
        """Mean next-token loss over `stream`, cut into the same windows as labkit's evaluation
        (so every variant of the benchmark is scored on the same predictions)."""
        self.model.eval()
        if self.family == "rnn":
            windows = BPTTBatches(batchify(stream, batch_size), self.seq_len)
            hidden = self.model.init_hidden(batch_size)
        else:
            windows, hidden = eval_windows(stream, self.seq_len, batch_size), None
        total, count = 0.0, 0
        for x, y in windows:
            logits, hidden = self.model(x, hidden)
            total += F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
            count += y.numel()
        return total / max(count, 1)
