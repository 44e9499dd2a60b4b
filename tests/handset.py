"""Models whose weights are set by hand, the oracles of the hook, surgery and lens tests: every
expected number is computed from the formulas in their docstrings, not by the code under test."""

from __future__ import annotations

import math

import torch

from labkit.models import RNNConfig, TransformerConfig, build_model


def hand_set_transformer() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """One layer, d_model 4, two heads of width 2, no MLP, zero positions. Every token embedding
    is [a, -a, b, -b] with a, b = +-1, so LayerNorm (mean 0, variance 1) leaves it x / sqrt(1 + eps).
    Queries and keys are zero (every head spreads evenly over the tokens it may see), values and
    the output projection are the identity: head 0 carries the a's, head 1 the b's, and
    resid_post_t = [P, -P, Q, -Q] with P = a_t + k mean_{s<=t} a_s, Q = b_t + k mean_{s<=t} b_s,
    k = 1 / sqrt(1 + eps). The final LayerNorm divides by sqrt((P^2 + Q^2) / 2 + eps) and the head
    (the identity) reads it out."""
    model = build_model(TransformerConfig(vocab_size=4, d_model=4, n_layers=1, n_heads=2, d_ff=4, context_length=8,
                                          dropout=0.0, tie_weights=False)).eval()
    a = torch.tensor([1.0, 1.0, -1.0, -1.0])  # token id -> a
    b = torch.tensor([1.0, -1.0, 1.0, -1.0])
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in (model.blocks[0].ln1, model.blocks[0].ln2, model.ln_f):
            ln.weight.fill_(1.0)
        model.tok_embed.weight.copy_(torch.stack([a, -a, b, -b], 1))
        model.blocks[0].attn.qkv.weight[8:].copy_(torch.eye(4))  # values: the identity
        model.blocks[0].attn.proj.weight.copy_(torch.eye(4))
        model.head.weight.copy_(torch.eye(4))
    return model, a, b


def by_hand(tokens: list[int], a: torch.Tensor, b: torch.Tensor, heads=(True, True)) -> torch.Tensor:
    eps, k = 1e-5, 1 / math.sqrt(1 + 1e-5)
    rows = []
    for t in range(len(tokens)):
        seen = tokens[:t + 1]
        P = float(a[tokens[t]]) + (k * float(a[seen].mean()) if heads[0] else 0.0)
        Q = float(b[tokens[t]]) + (k * float(b[seen].mean()) if heads[1] else 0.0)
        s = math.sqrt((P * P + Q * Q) / 2 + eps)
        rows.append([P / s, -P / s, Q / s, -Q / s])
    return torch.tensor(rows)  # (T, V)


def hand_set_rnn(alpha: float = 0.5) -> torch.nn.Module:
    """A ReLU RNN with W_ih = I, W_hh = alpha I, no biases and positive embeddings: ReLU never
    clips, so h_t = sum_{k<=t} alpha^(t-k) x_k and logits_t = W h_t + b."""
    torch.manual_seed(0)
    model = build_model(RNNConfig(vocab_size=6, cell="rnn_relu", d_embed=3, d_hidden=3, n_layers=1, dropout=0.0)).eval()
    with torch.no_grad():
        model.embed.weight.uniform_(0.1, 1.0)
        model.rnn.weight_ih_l0.copy_(torch.eye(3))
        model.rnn.weight_hh_l0.copy_(alpha * torch.eye(3))
        model.rnn.bias_ih_l0.zero_()
        model.rnn.bias_hh_l0.zero_()
    return model


class Letters:
    """A tokenizer over one-letter words: 'a' -> 0, 'b' -> 1, ...; <eos> is id 0 ('a')."""

    eos_id, unk_id, pad_id = 0, None, 0

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        return [ord(c) - ord("a") for c in text.split()]

    def id_to_token(self, ids) -> list[str]:
        return [chr(ord("a") + int(i)) for i in ids]
