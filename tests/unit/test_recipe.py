"""The fine-tuning recipe's parts, each switched on and checked to change what it should:
discriminative learning rates, the slanted triangular schedule, the language-model step on the
task's own text, and the time budget."""

from __future__ import annotations

import math

import pytest
import torch

from labkit.data import WordTokenizer
from labkit.data.tasks import TaskData
from labkit.models import RNNConfig, TransformerConfig, build_model
from labkit.train import TrainConfig
from labkit.train.adapt import adapt_language_model, task_text
from labkit.train.finetune import FinetuneConfig, build_classifier, finetuner, lm_steps
from labkit.train.schedule import lr_at

V = 40


def body(family: str) -> dict:
    if family == "rnn":
        return RNNConfig(vocab_size=V, d_embed=16, d_hidden=16, n_layers=2, dropout=0.0).to_dict()
    return TransformerConfig(vocab_size=V, d_model=16, n_layers=3, n_heads=2, d_ff=32, context_length=16,
                             dropout=0.0).to_dict()


def task(n: int = 120) -> TaskData:
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        label = int(torch.randint(2, (1,), generator=g))
        ids = [(5 + 2 * k + label) % V for k in range(int(torch.randint(4, 10, (1,), generator=g)))]
        rows.append((ids, label))
    return TaskData(rows[:80], rows[80:100], rows[100:], ("a", "b"), 0.0)


@pytest.mark.parametrize("family,groups", [("rnn", 3), ("transformer", 4)])
def test_discriminative_rates_divide_each_lower_group(family, groups):
    config = FinetuneConfig(lr_body=1e-3, lr_head=4e-3, lr_decay=2.6, epochs=1, device="cpu")
    torch.manual_seed(0)
    trainer = finetuner(build_classifier(body(family), config), task(), config)
    trainer.train_step()
    lr = trainer.lr()  # the head's, at the step just taken
    rates = [g["lr"] for g in trainer.optimizer.param_groups]
    assert rates[0] == pytest.approx(lr)  # the head
    body_rates = rates[1:]
    assert len(body_rates) == groups  # top layer group first, embeddings last
    for k, rate in enumerate(body_rates):
        assert rate == pytest.approx(lr * 0.25 / 2.6 ** k)
    flat = FinetuneConfig(lr_body=1e-3, lr_head=4e-3, epochs=1, device="cpu")  # lr_decay 1: every group alike
    trainer = finetuner(build_classifier(body(family), flat), task(), flat)
    trainer.train_step()
    assert len({round(g["lr"], 12) for g in trainer.optimizer.param_groups[1:]}) == 1


def test_slanted_triangular_schedule_rises_then_falls_in_straight_lines():
    rates = [lr_at(s, 1.0, warmup=10, total=100, min_ratio=0.0, kind="linear") for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[10] == pytest.approx(1.0) and rates[55] == pytest.approx(0.5) and rates[99] == pytest.approx(1 / 90)
    config = FinetuneConfig(schedule="linear", warmup_frac=0.1, epochs=4, batch_size=8, device="cpu")
    trainer = finetuner(build_classifier(body("rnn"), config), task(), config)
    assert trainer.config.schedule == "linear" and trainer.config.max_steps == 40 and trainer.config.warmup_steps == 4


def test_language_model_step_on_the_task_text_lowers_its_loss_there():
    data = task()
    words = [str(i) for i in range(V)]
    tokenizer = WordTokenizer.train([" ".join(words)], split="whitespace", specials=("<eos>",))
    stream = task_text(data, tokenizer)
    assert stream.train.numel() == sum(len(ids) + 1 for ids, _ in data.train)  # every sentence, then <eos>
    torch.manual_seed(0)
    model = build_model(RNNConfig(vocab_size=tokenizer.vocab_size, d_embed=16, d_hidden=16, n_layers=1,
                                  dropout=0.0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = adapt_language_model(model, tokenizer, data, steps=40, lr=1e-2,
                                  base=TrainConfig(batch_size=4, seq_len=16), device="cpu")
    assert result["lm_steps"] == 40
    assert result["lm_val_loss_after"] < result["lm_val_loss_before"] - 0.5
    assert math.isclose(result["lm_val_loss_before"], math.log(tokenizer.vocab_size), rel_tol=0.1)  # untrained
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_time_budget_stops_fine_tuning():
    class TenthOfASecondPerStep:  # a clock set by hand: after step n, n / 10 seconds of training
        def on_step(self, trainer, record):
            trainer.elapsed = trainer.step / 10

    config = FinetuneConfig(epochs=10_000, batch_size=8, eval_every=1_000_000, patience=1_000, time_budget_s=0.5,
                            log_every=1, device="cpu")
    card = finetuner(build_classifier(body("rnn"), config), task(), config, callbacks=[TenthOfASecondPerStep()]).fit()
    assert card["steps"] == 5 and card["stopped_by"] == "time budget" and card["wall_time_s"] == 0.5


def test_the_lm_step_reads_every_training_sentence_with_lm_text_all(monkeypatch):
    """`lm_text="all"`: the language-model step reads the task's training text beyond the labelled
    draw (its labels unread), and is still scored on the sentences held out for validation."""
    import labkit.train.adapt as adapt_module
    from labkit.data.synthetic import synthetic_lines
    from labkit.data.tasks import TextEncoder, load_task
    from labkit.train.finetune import adapt

    tokenizer = WordTokenizer.train(synthetic_lines(400), split="whitespace", specials=("<eos>",))
    seen = {}

    def spy(model, tok, data, **kw):  # the real step, recording what it was given
        seen["train"], seen["val"] = [tuple(ids) for ids, _ in data.train], [tuple(ids) for ids, _ in data.val]
        return real(model, tok, data, **kw)

    real = adapt_module.adapt_language_model
    monkeypatch.setattr("labkit.train.adapt.adapt_language_model", spy)
    model = build_model(RNNConfig(vocab_size=tokenizer.vocab_size, d_embed=8, d_hidden=8, n_layers=1, dropout=0.0))
    base = {"train": TrainConfig(batch_size=4, seq_len=8).to_dict()}
    config = FinetuneConfig(task="number", train_size=50, val_size=300, lm_steps=2, lm_text="labelled", device="cpu")
    labelled = load_task("number", TextEncoder(tokenizer), val_size=300, train_size=50)
    assert adapt(model, tokenizer, labelled, config, base)["lm_text_sentences"] == 50
    assert seen["train"] == [tuple(ids) for ids, _ in labelled.train]
    result = adapt(model, tokenizer, labelled, config.replace(lm_text="all"), base)
    everything = load_task("number", TextEncoder(tokenizer), val_size=300)
    assert result["lm_text_sentences"] == len(everything.train) == 8000 and len(seen["train"]) == 8000
    assert set(seen["train"]) >= {tuple(ids) for ids, _ in labelled.train}
    assert seen["val"] == [tuple(ids) for ids, _ in labelled.val]  # still scored on the held-out sentences
    subset = everything.subset(50, seed=3)  # a notebook's draw from the task it encoded once: no second encoding
    assert subset.all_train is everything.train and len(subset.train) == 50
    monkeypatch.setattr("labkit.train.adapt.encoded_task", None)
    assert adapt(model, tokenizer, subset, config.replace(lm_text="all"), base)["lm_text_sentences"] == 8000
    assert seen["train"] == [tuple(ids) for ids, _ in everything.train]
    with pytest.raises(ValueError, match="lm_text"):
        FinetuneConfig(lm_text="test")


def test_the_defaults_are_the_measured_recipe():
    """docs/results.md's final recipe: concat pooling, a slanted triangular schedule (10% warm-up,
    linear decay), no discriminative rates, an LM step on all of the task's training text (200
    steps for an RNN body, 60 for a Transformer), up to 10 epochs."""
    config = FinetuneConfig()
    assert (config.mode, config.pooling, config.schedule, config.warmup_frac, config.lr_decay, config.lm_text,
            config.epochs) == ("full", "concat", "linear", 0.1, 1.0, "all", 10)
    assert lm_steps(config, body("rnn")) == 200 and lm_steps(config, body("transformer")) == 60
    assert lm_steps(config.replace(lm_steps=0), body("rnn")) == 0 and lm_steps(config.replace(lm_steps=7), {}) == 7
    for family in ("rnn", "transformer"):
        model = build_classifier(body(family), config)
        assert model.config.pooling == "concat" and model.head.in_features == 3 * 16
        assert build_classifier(body(family), config.replace(pooling=None)).config.pooling == \
            ("last" if family == "rnn" else "mean")
    trainer = finetuner(build_classifier(body("rnn"), config), task(), config.replace(batch_size=8))
    assert (trainer.config.schedule, trainer.config.max_steps, trainer.config.warmup_steps) == ("linear", 100, 10)
