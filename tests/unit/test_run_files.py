"""The files of a run directory: every one written with the modes the umask gives (a run written
by one user is readable by the app run by another), and the atomic writes behind them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from labkit.atomic import atomic_path, write_atomic
from labkit.data import DataConfig, load_lm_data
from labkit.models import RNNConfig
from labkit.train import TrainConfig
from labkit.train.pretrain import pretrain


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_every_file_of_a_run_honours_the_umask(umask, tmp_path):
    data_config = DataConfig(corpus="synthetic", train_tokens=5_000, eval_tokens=1_000)
    old = os.umask(umask)
    try:
        torch.manual_seed(0)
        pretrain(RNNConfig(d_embed=8, d_hidden=8, n_layers=1, dropout=0.0),
                 TrainConfig(max_steps=4, batch_size=2, seq_len=8, eval_every=2, device="cpu"),
                 data_config, tmp_path / "run", data=load_lm_data(data_config))
    finally:
        os.umask(old)
    found = modes(tmp_path / "run")
    files = {name for name in found if (tmp_path / "run" / name).is_file()}
    assert {"config.json", "tokenizer.json", "model.safetensors", "metrics.jsonl", "card.json"} <= files
    assert any(name.endswith("state.pt") for name in files) and any(name.endswith("model.safetensors")
                                                                     and "/" in name for name in files)
    want = {name: (0o666 if name in files else 0o777) & ~umask for name in found}
    assert found == want


def test_atomic_writes_replace_whole_files_and_leave_nothing_on_error(tmp_path):
    target = tmp_path / "a.json"
    write_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    target.unlink()
    target.symlink_to(tmp_path / "elsewhere")
    write_atomic(target, "new")  # the link itself is replaced, never followed
    assert target.is_file() and not target.is_symlink() and not (tmp_path / "elsewhere").exists()
