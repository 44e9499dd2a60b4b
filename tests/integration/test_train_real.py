"""Pretraining on a WikiText-2 slice end to end, and torch.compile training the same model (slow)."""

from __future__ import annotations

import pytest
import torch

from labkit.data import DataConfig
from labkit.errors import LabkitError, RunError
from labkit.models import RNNConfig, TransformerConfig
from labkit.runs import load_run
from labkit.train import History, Trainer
from labkit.train.pretrain import pretrain, resume

from toy import tiny_model, toy_data, train_config


@pytest.mark.integration
@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_pretrain_on_a_wikitext_slice_then_load_and_resume(family, labkit_data, tmp_path):
    data_config = DataConfig(data_dir=str(labkit_data), max_vocab=2000, train_tokens=30_000,
                             eval_tokens=2_000)
    model_config = (RNNConfig(cell="lstm", d_embed=32, d_hidden=32, n_layers=1, dropout=0.0)
                    if family == "rnn" else
                    TransformerConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64,
                                      context_length=32, dropout=0.0))
    history = History()
    card = pretrain(model_config, train_config(max_steps=40, eval_every=20, batch_size=8,
                                               seq_len=32, lr=5e-3),
                    data_config, tmp_path / "run", callbacks=[history])
    losses = [r["loss"] for r in history.steps]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0  # from ~ln(2002)=7.6 well down
    assert card["test_ppl"] < 2002
    loaded = load_run(tmp_path / "run")
    assert loaded.tokenizer.vocab_size == 2002 and not loaded.model.training
    with pytest.raises(RunError, match="already holds a run"):
        pretrain(model_config, train_config(), data_config, tmp_path / "run")
    card2 = resume(tmp_path / "run", overrides={"max_steps": 44})
    assert card2["steps"] == 44 and card2["tokens_seen"] == 44 * 8 * 32
    with pytest.raises(LabkitError, match="cannot change"):
        resume(tmp_path / "run", overrides={"lr": 1.0})


@pytest.mark.slow
def test_torch_compile_trains_the_same_model():
    data = toy_data()
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        history = History()
        Trainer(tiny_model("transformer", data.tokenizer.vocab_size, dropout=0.0), data,
                train_config(max_steps=3, compile=compiled), None, [history]).fit()
        losses[compiled] = [r["loss"] for r in history.steps]
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)
