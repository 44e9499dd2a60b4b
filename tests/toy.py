"""A made-up corpus with structure to learn and tiny models for it: the trainer's tests, in the
unit and the integration tier."""

from __future__ import annotations

import torch

from labkit.data import LMData, WordTokenizer
from labkit.models import RNNConfig, TransformerConfig, build_model
from labkit.train import TrainConfig


def toy_data(n_lines: int = 300, seed: int = 0) -> LMData:
    """A small corpus with structure to learn: counting sequences with random starts."""
    g = torch.Generator().manual_seed(seed)
    words = [f"w{i}" for i in range(30)]
    lines = []
    for _ in range(n_lines):
        start = int(torch.randint(30, (1,), generator=g))
        lines.append(" ".join(words[(start + k) % 30] for k in range(8)))
    tok = WordTokenizer.train(lines[:240], split="whitespace", specials=("<unk>", "<eos>"))
    enc = {name: tok.encode_lines(part) for name, part in
           (("train", lines[:240]), ("valid", lines[240:270]), ("test", lines[270:]))}
    return LMData(tok, enc["train"], enc["valid"], enc["test"],
                  {"train": 1.0, "valid": 1.0, "test": 1.0})


def tiny_model(family: str, vocab: int, dropout: float = 0.1):
    if family == "rnn":
        return build_model(RNNConfig(vocab_size=vocab, d_embed=24, d_hidden=24, n_layers=2,
                                     dropout=dropout))
    return build_model(TransformerConfig(vocab_size=vocab, d_model=24, n_layers=2, n_heads=2,
                                         d_ff=48, context_length=16, dropout=dropout))


def train_config(**kw) -> TrainConfig:
    base = dict(max_steps=12, batch_size=4, seq_len=12, eval_every=100, log_every=1, lr=3e-3,
                warmup_steps=2, device="cpu", seed=7)
    return TrainConfig(**{**base, **kw})
