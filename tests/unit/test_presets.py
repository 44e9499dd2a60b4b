"""labkit.presets: a size plus a model picks that model's own preset when the size has one."""

from __future__ import annotations

import pytest

from labkit.errors import LabkitError
from labkit.presets import PRESETS, resolve_preset


def test_a_size_and_a_model_pick_the_models_own_preset_when_there_is_one():
    gru = resolve_preset("laptop", "gru")  # the GRU's recipe (one layer), not the LSTM's with a GRU cell
    assert gru == PRESETS["laptop-gru"] and (gru["model"]["cell"], gru["model"]["n_layers"]) == ("gru", 1)
    assert PRESETS["laptop-lstm"]["model"]["n_layers"] == 1 == PRESETS["demo-lstm"]["model"]["n_layers"]
    assert resolve_preset("tiny", "gru")["model"] == {**PRESETS["tiny-lstm"]["model"], "cell": "gru"}  # no tiny-gru
    assert resolve_preset("laptop", "transformer") == PRESETS["laptop-transformer"]
    assert resolve_preset("laptop") == PRESETS["laptop-lstm"]
    resolve_preset("laptop", "gru")["model"]["n_layers"] = 3  # a copy: the preset itself stays
    assert PRESETS["laptop-gru"]["model"]["n_layers"] == 1
    with pytest.raises(LabkitError, match="not transformer"):
        resolve_preset("laptop-gru", "transformer")
    with pytest.raises(LabkitError, match="unknown model"):
        resolve_preset("laptop", "mamba")


def test_eval_every_alone_switches_a_presets_timed_validations_off():
    from labkit.cli import build_parser
    from labkit.cli.pretrain import configs
    from labkit.presets import resolve_preset

    preset = resolve_preset("laptop")

    def train(*flags: str):
        args = build_parser().parse_args(["pretrain", "--preset", "laptop", *flags])
        return configs(args, preset["train"], preset["data"])[0]

    assert (train().eval_every, train().eval_every_s) == (1_000_000, 60.0)  # the preset's: every minute
    assert (train("--eval-every", "50").eval_every, train("--eval-every", "50").eval_every_s) == (50, None)
    both = train("--eval-every", "50", "--eval-every-s", "2m")
    assert (both.eval_every, both.eval_every_s) == (50, 120.0)
    assert train("--eval-every-s", "30s").eval_every_s == 30.0


@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p["model"]["family"] == "transformer"])
def test_a_transformer_presets_training_windows_reach_every_learned_position(name):
    """One real training step of the preset's window on a small vocabulary: every row of the
    position table receives a gradient (a window shorter than the context leaves the rows past it
    at their random start, and the probes that read those positions read noise)."""
    import torch

    from labkit.data.lm import LMData
    from labkit.data.tokenizers import WordTokenizer
    from labkit.models import build_model, config_from_dict
    from labkit.train import TrainConfig, Trainer

    preset = PRESETS[name]
    torch.manual_seed(0)
    model = build_model(config_from_dict(preset["model"] | {"vocab_size": 40, "output": "softmax"}))
    tokenizer = WordTokenizer.train([" ".join(f"w{i}" for i in range(36))], split="whitespace")
    stream = torch.randint(4, 40, (4 * preset["train"]["seq_len"] + 1,))
    data = LMData(tokenizer, stream, stream[:200], stream[:200], {"train": 1.0, "valid": 1.0, "test": 1.0})
    reached = []
    model.pos_embed.weight.register_hook(lambda grad: reached.append((grad.abs().sum(dim=1) > 0).tolist()))
    train = TrainConfig.from_dict(preset["train"] | dict(batch_size=1, max_steps=1, eval_every=10**6,
                                                         time_budget_s=None, eval_every_s=None, device="cpu"))
    Trainer(model, data, train).fit()
    assert reached and all(reached[0]), f"positions never trained: {[i for i, r in enumerate(reached[0]) if not r]}"
