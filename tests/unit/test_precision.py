"""Precision by what the device can do (labkit.device.resolve_precision) and fp16's gradient scaler
(labkit.train.scaling): the choice with the one function that asks CUDA set by hand, and the fp16
path trained for real on the CPU, an overflow skipped and counted, the scale kept in a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from labkit import device as devices
from labkit.errors import LabkitError
from labkit.runs import RunDir, read_metrics
from labkit.train import History, Trainer, TrainingStopped

from toy import tiny_model, toy_data, train_config

CUDA = torch.device("cuda")  # only a name here: nothing runs on it


@pytest.mark.parametrize("native, chosen", [(True, "bf16"), (False, "fp16")])
def test_auto_picks_bf16_where_the_gpu_computes_in_it_else_fp16(monkeypatch, native, chosen):
    monkeypatch.setattr(devices, "cuda_has_bf16", lambda device: native)
    assert devices.resolve_precision("auto", CUDA) == chosen
    assert devices.resolve_precision("fp32", CUDA) == "fp32"  # asked for: kept
    assert devices.resolve_precision("fp16", torch.device("cpu")) == "fp16"
    with pytest.raises(LabkitError, match="unknown precision 'fp8'"):
        devices.resolve_precision("fp8", CUDA)


class Inf:
    """A callback that makes one step overflow: after `step`, every gradient of the next backward
    pass is multiplied by inf (`where="grad"`), or the next forward pass's logits (`where="logits"`)."""

    def __init__(self, step: int, where: str):
        self.step, self.where, self.weights = step, where, {}

    def on_step(self, trainer, record) -> None:
        self.weights[record["step"]] = [p.detach().clone() for p in trainer.model.parameters()]
        if record["step"] != self.step:
            return
        handles = []

        def once(*args):
            for h in handles:
                h.remove()

        if self.where == "grad":
            p = next(trainer.model.parameters())
            handles.append(p.register_hook(lambda g: (once(), g * math.inf)[1]))
        else:
            handles.append(trainer.model.hook_final.register_forward_hook(
                lambda m, a, out: (once(), out * math.inf)[1]))


def fp16_run(tmp_path, callbacks=(), precision="fp16", steps=8):
    torch.manual_seed(0)
    data = toy_data()
    history = History()
    trainer = Trainer(tiny_model("transformer", data.tokenizer.vocab_size, dropout=0.0), data,
                      train_config(max_steps=steps, precision=precision, eval_every=4), RunDir(tmp_path / "run"),
                      [history, *callbacks])
    return trainer, history


def test_fp16_trains_on_the_cpu_through_autocast_and_the_scaler(tmp_path):
    trainer, history = fp16_run(tmp_path)
    dtypes = []
    trainer.model.blocks[0].hook_attn_out.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    card = trainer.fit()
    assert card["precision"] == "fp16" and card["skipped_steps"] == 0
    assert card["loss_scale"] == 2.0 ** 16  # GradScaler's first scale; it grows only after 2,000 good steps
    assert torch.float16 in dtypes  # the forward pass ran in fp16
    losses = [r["loss"] for r in history.steps]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # the weights stay fp32


@pytest.mark.parametrize("where", ["grad", "logits"])
def test_an_overflow_is_skipped_counted_and_halves_the_scale(tmp_path, where):
    inf = Inf(3, where)
    trainer, history = fp16_run(tmp_path, [inf])
    card = trainer.fit()
    assert card["skipped_steps"] == 1 and card["loss_scale"] == 2.0 ** 15
    assert card["steps"] == 8 and math.isfinite(card["best_val_loss"])
    for before, after in zip(inf.weights[3], inf.weights[4]):
        assert torch.equal(before, after)  # step 4 was not taken
    assert any(not torch.equal(b, a) for b, a in zip(inf.weights[4], inf.weights[5]))  # step 5 was
    records = {r["step"]: r for r in read_metrics(RunDir(tmp_path / "run").metrics_path) if "loss_scale" in r}
    assert records[3]["skipped_steps"] == 0 and records[4]["skipped_steps"] == 1
    assert records[4]["loss_scale"] == 2.0 ** 15


def test_without_a_scaler_an_overflow_stops_the_run(tmp_path):
    trainer, _ = fp16_run(tmp_path, [Inf(3, "logits")], precision="fp32")
    with pytest.raises(TrainingStopped, match="the loss became nan at step 4"):
        trainer.fit()


def test_the_scale_and_the_skipped_steps_are_kept_in_a_checkpoint(tmp_path):
    trainer, _ = fp16_run(tmp_path, [Inf(3, "grad")], steps=4)
    trainer.fit()  # a checkpoint at step 4 (eval_every), after the skipped step
    again, _ = fp16_run(tmp_path / "again", steps=8)
    again.resume(RunDir(tmp_path / "run").latest_checkpoint())
    assert again.step == 4 and again.scaling.scale == 2.0 ** 15 and again.scaling.skipped == 1
