"""Named configurations: model, training and data settings that belong together.

Sizes: `tiny` (seconds on a CPU; tests and the offline demo), `demo` (1,000 steps, a minute or
two on a 2-core CPU: the app's demo models on WikiText-2), `laptop` (10 minutes on a 2-core CPU, the
recipes that learn most in that time), `classic` (the classic word-language-model
LSTM, 2 x 200, batch 20, bptt 35, SGD with the rate divided by 4 when validation stalls; and a
Transformer with about the same number of parameters, 14.1M vs 14.0M), `medium` (GPU sizes).
A preset is named `<size>-<family>`, e.g. `classic-lstm` or `tiny-transformer`.
"""

from __future__ import annotations

from typing import Any

from labkit.errors import LabkitError

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny-lstm": {
        "model": dict(family="rnn", cell="lstm", d_embed=64, d_hidden=64, n_layers=1, dropout=0.0,
                      tie_weights=True),
        "train": dict(optimizer="adamw", lr=3e-3, batch_size=16, seq_len=32, max_steps=100,
                      eval_every=50, log_every=5, warmup_steps=10),
        "data": dict(max_vocab=5000, train_tokens=100_000, eval_tokens=10_000),
    },
    "tiny-transformer": {
        "model": dict(family="transformer", d_model=64, n_layers=2, n_heads=4, d_ff=256,
                      context_length=64, dropout=0.0),
        # windows as long as the context (every position's row learns), as many tokens a step as the LSTM's
        "train": dict(optimizer="adamw", lr=3e-3, batch_size=8, seq_len=64, max_steps=100,
                      eval_every=50, log_every=5, warmup_steps=10),
        "data": dict(max_vocab=5000, train_tokens=100_000, eval_tokens=10_000),
    },
    # Designed for a 2-core laptop CPU: 10 minutes of training on all of WikiText-2 (the full
    # vocabulary), an adaptive softmax, evaluations every minute of training (docs/results.md).
    # The warm-up is its steps or a quarter of the steps that fit in the budget, whichever is fewer:
    # a slower CPU fits fewer steps in 10 minutes than the Transformer's 300 (docs/results.md).
    # One recurrent layer: in 10 minutes it reached validation perplexity 167.5 where two reached 194.7.
    "laptop-lstm": {
        "model": dict(family="rnn", cell="lstm", d_embed=256, d_hidden=256, n_layers=1, dropout=0.1,
                      tie_weights=False, output="adaptive"),
        "train": dict(optimizer="adamw", lr=4e-3, weight_decay=0.01, schedule="cosine", warmup_steps=100,
                      warmup_share=0.25, batch_size=32, seq_len=64, grad_clip=0.5, max_steps=1_000_000, time_budget_s=600.0,
                      eval_every=1_000_000, eval_every_s=60.0, log_every=20),
        "data": dict(),
    },
    "laptop-transformer": {
        "model": dict(family="transformer", d_model=256, n_layers=4, n_heads=4, d_ff=1024, context_length=128,
                      dropout=0.1, tie_weights=False, output="adaptive"),
        "train": dict(optimizer="adamw", lr=2e-3, weight_decay=0.1, schedule="cosine", warmup_steps=300,
                      warmup_share=0.25, batch_size=24, seq_len=128, grad_clip=1.0, max_steps=1_000_000, time_budget_s=600.0,
                      eval_every=1_000_000, eval_every_s=60.0, log_every=20),
        "data": dict(),
    },
    "classic-lstm": {
        "model": dict(family="rnn", cell="lstm", d_embed=200, d_hidden=200, n_layers=2,
                      dropout=0.2, tie_weights=False),
        "train": dict(optimizer="sgd", lr=20.0, schedule="plateau", batch_size=20, seq_len=35,
                      grad_clip=0.25, max_steps=2_983 * 6, eval_every=500, log_every=20),
        "data": dict(),
    },
    "classic-transformer": {
        "model": dict(family="transformer", d_model=256, n_layers=7, n_heads=4, d_ff=1024,
                      context_length=256, dropout=0.1, tie_weights=True),
        "train": dict(optimizer="adamw", lr=1e-3, weight_decay=0.1, schedule="cosine",
                      warmup_steps=200, batch_size=3, seq_len=256, grad_clip=1.0,
                      max_steps=10_000, eval_every=500, log_every=20),
        "data": dict(),
    },
    "medium-lstm": {
        "model": dict(family="rnn", cell="lstm", d_embed=650, d_hidden=650, n_layers=2,
                      dropout=0.5, tie_weights=True),
        "train": dict(optimizer="sgd", lr=20.0, schedule="plateau", batch_size=20, seq_len=35,
                      grad_clip=0.25, max_steps=2_983 * 40, eval_every=1_000, log_every=50),
        "data": dict(),
    },
    "medium-transformer": {
        "model": dict(family="transformer", d_model=512, n_layers=6, n_heads=8, d_ff=2048,
                      context_length=256, dropout=0.2, tie_weights=True),
        "train": dict(optimizer="adamw", lr=6e-4, weight_decay=0.1, schedule="cosine",
                      warmup_steps=500, batch_size=32, seq_len=256, grad_clip=1.0,
                      max_steps=20_000, eval_every=1_000, log_every=50),
        "data": dict(),
    },
}


def _variant(name: str, **changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A copy of preset `name` with some settings changed (`model={...}`, `train={...}`)."""
    return {part: {**values, **changes.get(part, {})} for part, values in PRESETS[name].items()}


# The laptop LSTM recipe with a GRU cell, one layer like the LSTM's: two GRU layers stayed on the
# unigram plateau for about 800 steps; in 3-minute trials one layer reached 208 where two reached
# 348 at their best rate (1e-3) and 821 at the LSTM's (docs/results.md).
PRESETS["laptop-gru"] = _variant("laptop-lstm", model=dict(cell="gru", n_layers=1))
# The app's demo on WikiText-2 (`labkit demo`): the laptop recipes cut to 1,000 steps each (bound
# by steps, never by time: a slower machine makes the same models, later), the full vocabulary,
# no dropout (a run this short never sees a word often enough to over-fit it), ten validations on
# the first 20,000 validation tokens and the whole split once at the end, a training record every
# 10 steps. The Transformer has two layers, so that a head can read another's output (docs/results.md).
DEMO_TRAIN = dict(max_steps=1000, time_budget_s=None, eval_every=100, eval_every_s=None, val_tokens=20_000,
                  log_every=10, warmup_share=None)
PRESETS["demo-lstm"] = _variant("laptop-lstm", model=dict(dropout=0.0), train=dict(DEMO_TRAIN, warmup_steps=30))
PRESETS["demo-transformer"] = _variant(
    "laptop-transformer", model=dict(n_layers=2, context_length=64, dropout=0.0),
    train=dict(DEMO_TRAIN, lr=3e-3, warmup_steps=50, batch_size=32, seq_len=64))
SIZES = ("tiny", "demo", "laptop", "classic", "medium")
MODELS = ("lstm", "gru", "rnn_tanh", "rnn_relu", "transformer")


def resolve_preset(name: str, model: str | None = None) -> dict[str, dict[str, Any]]:
    """`classic-lstm`, or a size plus `model`: that size's preset for the model when there is one
    (`laptop` + `gru` -> `laptop-gru`), else the size's LSTM preset with that cell (`tiny` + `gru`)."""
    if model is not None and model not in MODELS:
        raise LabkitError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if name in SIZES:
        family = "transformer" if model == "transformer" else "lstm"
        name = f"{name}-{model}" if f"{name}-{model}" in PRESETS else f"{name}-{family}"
    if name not in PRESETS:
        raise LabkitError(f"unknown preset {name!r}; choose one of "
                          f"{', '.join([*SIZES, *PRESETS])}")
    preset = {part: dict(values) for part, values in PRESETS[name].items()}
    is_transformer = preset["model"]["family"] == "transformer"
    if model is not None and (model == "transformer") != is_transformer:
        raise LabkitError(f"preset {name!r} is for a {preset['model']['family']}, not {model}; "
                          f"use --preset {name.split('-')[0]} --model {model}")
    if model is not None and not is_transformer:
        preset["model"]["cell"] = model
    return preset
