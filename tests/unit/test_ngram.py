"""labkit.models.ngram: the sparse bigram equals the dense one Exercise 04.bigram writes, each
context's probabilities add up to 1, and its alpha is chosen without the validation text."""

from __future__ import annotations

import math

import pytest
import torch

from labkit.exercises.compare import bigram_perplexity as dense_bigram
from labkit.models.ngram import ALPHAS, bigram_log_probs, bigram_perplexity, choose_alpha


def streams(seed: int = 0, vocab: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (300,), generator=g), torch.randint(0, vocab, (60,), generator=g)


@pytest.mark.parametrize("alpha", [1.0, 0.1, 0.001])
def test_the_sparse_counts_give_the_dense_tables_perplexity(alpha):
    train, test = streams()
    assert bigram_perplexity(train, test, 7, alpha) == pytest.approx(dense_bigram(train.tolist(), test.tolist(), 7, alpha))


def test_every_context_is_a_distribution_over_the_vocabulary_and_unseen_pairs_cost_a_finite_amount():
    train = torch.tensor([0, 1, 0, 1, 2, 0, 1])  # 3 never follows anything, 2 follows 1 once
    for a in range(4):
        after = torch.stack([torch.tensor([a, b]) for b in range(4)])
        probs = torch.cat([bigram_log_probs(train, pair, 4, 0.5) for pair in after]).exp()
        assert probs.sum().item() == pytest.approx(1.0)
    assert math.isfinite(bigram_perplexity(train, torch.tensor([3, 3, 3]), 4, 0.5))
    with pytest.raises(ValueError, match="alpha must be positive"):
        bigram_log_probs(train, train, 4, 0.0)


def test_alpha_is_chosen_on_held_out_training_text():
    train = torch.tensor([0, 1, 2, 3] * 50)  # every pair certain: the least smoothing wins
    assert choose_alpha(train, 4) == min(ALPHAS)
    assert choose_alpha(train, 4, alphas=(1.0, 0.5)) == 0.5
