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
