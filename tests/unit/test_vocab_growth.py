"""Words a pretrained body lacks, given rows of their own: the tokenizer grown at its end, the
network grown to match (old outputs unchanged, new rows the mean of the old), the task's words
chosen from its training text only, and the language-model step moving the new rows."""

from __future__ import annotations

import pytest
import torch

from labkit.data import DataConfig, WordTokenizer
from labkit.data.tasks import TextEncoder, task_words
from labkit.models import RNNConfig, TransformerConfig, build_model
from labkit.models.grow import grow_vocabulary
from labkit.runs import load_run
from labkit.train import TrainConfig
from labkit.train.finetune import FinetuneConfig, finetune
from labkit.train.pretrain import pretrain


def test_a_grown_tokenizer_keeps_every_old_id_and_appends_the_new_words():
    tok = WordTokenizer.train(["the cat sat"], specials=("<unk>", "<pad>", "<eos>"))
    grown = tok.extended(["dog", "cat", "dog", "mat"])  # a known word and a repeat are skipped
    assert grown.vocab.itos == [*tok.vocab.itos, "dog", "mat"] and grown.vocab_size == tok.vocab_size + 2
    assert grown.encode("the cat sat on the mat") == [*tok.encode("the cat sat on the"), tok.vocab_size + 1]


@pytest.mark.parametrize("config", [
    RNNConfig(vocab_size=20, d_embed=8, d_hidden=8, n_layers=1, dropout=0.0, tie_weights=True),
    RNNConfig(vocab_size=20, d_embed=16, d_hidden=16, n_layers=1, dropout=0.0, output="adaptive", adaptive_cutoffs=(5, 12)),
    TransformerConfig(vocab_size=20, d_model=8, n_layers=1, n_heads=2, d_ff=16, context_length=8, dropout=0.0),
], ids=["rnn-tied", "rnn-adaptive", "transformer"])
def test_a_grown_network_reads_the_old_words_as_before_and_starts_new_ones_at_the_mean(config):
    torch.manual_seed(0)
    model = build_model(config).eval()
    grown = grow_vocabulary(model, 3).eval()
    assert grown.config.vocab_size == 23
    table = (grown.tok_embed if hasattr(grown, "tok_embed") else grown.embed).weight
    old = (model.tok_embed if hasattr(model, "tok_embed") else model.embed).weight
    assert torch.equal(table[:20], old) and torch.allclose(table[20:], old.mean(0).expand(3, -1))
    ids = torch.tensor([[1, 4, 7, 19]])
    with torch.no_grad():
        before, after = model(ids).hidden, grown(ids).hidden
    assert torch.allclose(before, after)  # the same states from the same words
    if config.output == "adaptive":  # the clusters keep their boundaries; the new words join the last
        assert tuple(grown.config.adaptive_cutoffs) == (5, 12) and grown.head.cutoffs == [5, 12, 23]
    else:  # the old words' logits are the same; the new ones read the mean output row
        with torch.no_grad():
            assert torch.allclose(grown.logits(after)[..., :20], model.logits(before), atol=1e-6)


def test_task_words_are_the_unknown_ones_seen_often_enough_most_frequent_first():
    tok = WordTokenizer.train(["the film was good"], specials=("<unk>", "<pad>", "<eos>"))
    sentences = ["the film was unfunny", "unfunny and tiresome", "an unfunny , tiresome film", "riveting"]
    assert task_words(sentences, TextEncoder(tok), 2) == ["unfunny", "tiresome"]
    assert task_words(sentences, TextEncoder(tok), 1) == ["unfunny", "tiresome", ",", "an", "and", "riveting"]
    assert task_words(sentences, TextEncoder(tok), 0) == []


def test_the_language_model_step_trains_the_new_rows(tmp_path):
    """A body whose vocabulary holds the synthetic corpus's 30 commonest words; the number task's
    other words get rows: the mean embedding when nothing trains them, moved by the LM step."""
    torch.manual_seed(0)
    pretrain(RNNConfig(d_embed=16, d_hidden=16, n_layers=1, dropout=0.0, tie_weights=True),
             TrainConfig(max_steps=4, eval_every=4, batch_size=4, seq_len=16, device="cpu"),
             DataConfig(corpus="synthetic", max_vocab=30, train_tokens=4000, eval_tokens=300), tmp_path / "lm")
    base = load_run(tmp_path / "lm")
    common = dict(task="number", mode="frozen", max_steps=2, val_size=50, eval_every=2, device="cpu")
    still = finetune(tmp_path / "lm", FinetuneConfig(**common, lm_steps=0), tmp_path / "still")
    moved = finetune(tmp_path / "lm", FinetuneConfig(**common, lm_steps=5), tmp_path / "moved")
    added = still["vocab_added"]
    assert added > 0 and moved["vocab_added"] == added and still["oov_rate"] < still["oov_rate_before"]
    mean = base.model.embed.weight.mean(0)
    rows = {name: load_run(tmp_path / name).model.body.embed.weight[-added:] for name in ("still", "moved")}
    assert torch.allclose(rows["still"], mean.expand(added, -1))  # frozen, no LM step: where they started
    assert (rows["moved"] - mean).abs().amax(1).min() > 0  # every new row moved
    tok = load_run(tmp_path / "moved").tokenizer
    assert tok.vocab.itos[: base.tokenizer.vocab_size] == base.tokenizer.vocab.itos
