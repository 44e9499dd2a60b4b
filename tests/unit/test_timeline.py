"""The timeline ("watch it learn"): the recorder appends a snapshot at each evaluation of a real
(tiny) training run, a resumed run reads as an uninterrupted one, a reader following a live run
sees whole snapshots only, and each snapshot holds what the model computes at that step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from labkit.data.lm import DataConfig, load_lm_data
from labkit.inspect.attention import head_stats
from labkit.inspect.heads import induction_score
from labkit.inspect.probes import copy_accuracy, overall
from labkit.inspect.timeline import choose_sentence, probe_items, read_timeline
from labkit.models import RNNConfig, TransformerConfig, build_model
from labkit.recorder import TimelineRecorder
from labkit.runs import RunDir, load_weights
from labkit.runs.timeline import timeline_path
from labkit.train.pretrain import pretrain, resume
from labkit.train.trainer import TrainConfig

COPY = DataConfig(corpus="synthetic-copy", train_tokens=4000, eval_tokens=400)
TRAIN = TrainConfig(batch_size=4, seq_len=16, max_steps=6, eval_every=2, log_every=1, lr=3e-3, schedule="constant",
                    warmup_steps=0, device="cpu", precision="fp32")


def transformer(vocab: int):
    return TransformerConfig(vocab_size=vocab, d_model=16, n_layers=2, n_heads=2, d_ff=32, context_length=32, dropout=0.0)


class Reader:
    """A callback after the recorder: what a viewer reading the timeline sees at each evaluation."""

    def __init__(self, run):
        self.run, self.seen = run, []

    def on_eval(self, trainer, record):
        self.seen.append([s.step for s in read_timeline(self.run)])


def test_a_snapshot_at_each_evaluation_holds_what_the_model_computes(tmp_path):
    data = load_lm_data(COPY)
    run = tmp_path / "tf"
    reader = Reader(run)
    pretrain(transformer(data.tokenizer.vocab_size), TRAIN, COPY, run, data=data, callbacks=[TimelineRecorder(), reader])
    assert reader.seen == [[2], [2, 4], [2, 4, 6]]  # live: each evaluation's snapshot is there, whole
    snaps = read_timeline(run)
    sentence = choose_sentence(data.valid, data.tokenizer.eos_id, 32)
    assert 12 <= len(sentence) <= 24 and snaps[0].tokens == data.tokenizer.id_to_token(sentence)
    last = snaps[-1]
    assert last.attention.shape == (2, 2, len(sentence), len(sentence))
    assert last.val_loss == pytest.approx(json.loads(RunDir(run).metrics_path.read_text().splitlines()[-2])["val_loss"])
    # the step-6 snapshot is the step-6 model's: recompute it from that checkpoint's weights
    model = build_model(transformer(data.tokenizer.vocab_size)).eval()
    load_weights(model, RunDir.checkpoint_weights(RunDir(run).latest_checkpoint()))
    from labkit.models.hooks import run_with_cache

    with torch.no_grad():
        _, cache = run_with_cache(model, torch.tensor([sentence]), names="blocks.*.attn.hook_pattern")
    attention = cache.stack("attn.hook_pattern")[:, 0].numpy()
    np.testing.assert_allclose(last.attention, attention, atol=5e-4)  # stored to 3 decimals
    pool = [i for i in range(data.tokenizer.vocab_size) if i not in {data.tokenizer.eos_id, data.tokenizer.unk_id}]
    induction = induction_score(model, pool, 15, batch=4, prefix=[data.tokenizer.eos_id])
    stats = head_stats(attention, induction)
    np.testing.assert_allclose(last.head_stats["entropy"].ravel(), [r["entropy"] for r in stats], atol=1e-3)
    np.testing.assert_allclose(last.head_stats["previous_token"].ravel(), [r["previous_token_share"] for r in stats],
                               atol=1e-3)
    np.testing.assert_allclose(last.head_stats["induction"], induction, atol=1e-3)
    probe, items = probe_items("synthetic-copy", 32)
    assert probe == "copy" and max(item.length for item in items) == 12  # 12 symbols twice, | and <eos>: 26 of 32
    assert last.probes == {"copy": pytest.approx(overall(copy_accuracy(model, data.tokenizer, items)), abs=1e-4)}
    assert timeline_path(run).stat().st_size < 60_000  # small: a few KB per snapshot


def test_resume_drops_the_snapshots_it_takes_again_and_reads_as_one_run(tmp_path):
    data = load_lm_data(COPY)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    pretrain(transformer(data.tokenizer.vocab_size), TRAIN, COPY, whole, data=data, callbacks=[TimelineRecorder()])
    pretrain(transformer(data.tokenizer.vocab_size), TRAIN.replace(max_steps=4), COPY, parts, data=data,
             callbacks=[TimelineRecorder()])
    # as if killed after the step-6 snapshot, before its checkpoint: a stale line past step 4
    with open(timeline_path(parts), "a") as f:
        f.write(json.dumps({"kind": "snapshot", "step": 6, "val_loss": -1.0, "probes": {"copy": 2.0}}) + "\n")
    resume(parts, callbacks=[TimelineRecorder()], overrides={"max_steps": 6})
    a, b = read_timeline(whole), read_timeline(parts)
    assert [s.step for s in b] == [2, 4, 6] == [s.step for s in a]
    lines = timeline_path(parts).read_text().splitlines()
    assert sum('"step": 6' in line for line in lines) == 1 and sum('"sentence"' in line for line in lines) == 1
    for x, y in zip(a[:2], b[:2]):  # before the resume: the same training, the same snapshots
        assert x.tokens == y.tokens and x.val_loss == pytest.approx(y.val_loss, abs=1e-6)
        np.testing.assert_allclose(x.attention, y.attention, atol=1e-3)
        assert x.probes == y.probes
    # after it: the resumed model's own step 6 (its metrics, its last checkpoint), not the stale line
    val = [r["val_loss"] for r in map(json.loads, RunDir(parts).metrics_path.read_text().splitlines()) if "val_loss" in r]
    assert b[2].tokens == a[2].tokens and b[2].val_loss == pytest.approx(val[-1]) and b[2].probes["copy"] <= 1
    model = build_model(transformer(data.tokenizer.vocab_size)).eval()
    load_weights(model, RunDir.checkpoint_weights(RunDir(parts).latest_checkpoint()))
    from labkit.models.hooks import run_with_cache

    with torch.no_grad():
        _, cache = run_with_cache(model, torch.tensor([choose_sentence(data.valid, data.tokenizer.eos_id, 32)]),
                                  names="blocks.*.attn.hook_pattern")
    np.testing.assert_allclose(b[2].attention, cache.stack("attn.hook_pattern")[:, 0].numpy(), atol=5e-4)


def test_a_torn_or_damaged_timeline_reads_as_its_whole_snapshots(tmp_path):
    data = load_lm_data(COPY)
    run = tmp_path / "tf"
    pretrain(transformer(data.tokenizer.vocab_size), TRAIN.replace(max_steps=4), COPY, run, data=data,
             callbacks=[TimelineRecorder()])
    path = timeline_path(run)
    whole = path.read_text()
    with open(path, "a") as f:  # a writer in the middle of a line, and lines of nonsense
        f.write('{"kind": "snapshot", "step": 9, "attention": [1, 2]}\n{"kind": "snapshot", "step": "x"}\nnot json\n'
                '{"kind": "snapshot", "step": 8, "attent')
    snaps = read_timeline(run)
    assert [s.step for s in snaps] == [2, 4, 9] and snaps[-1].attention is None and snaps[0].attention is not None
    assert read_timeline(tmp_path / "nothing") == []
    path.write_text(whole[: len(whole) // 2])  # cut anywhere: never an error
    assert [s.step for s in read_timeline(run)] in ([], [2])


def test_what_a_run_records_depends_on_its_family_and_corpus(tmp_path):
    agreement = DataConfig(corpus="synthetic-agreement", train_tokens=4000, eval_tokens=400)
    data = load_lm_data(agreement)
    lstm = RNNConfig(vocab_size=data.tokenizer.vocab_size, cell="lstm", d_embed=16, d_hidden=16, n_layers=1, dropout=0.0)
    pretrain(lstm, TRAIN.replace(max_steps=2), agreement, tmp_path / "lstm", data=data, callbacks=[TimelineRecorder()])
    snap, = read_timeline(tmp_path / "lstm")
    assert snap.attention is None and snap.head_stats is None and list(snap.probes) == ["agreement"]
    text = tmp_path / "notes.txt"
    text.write_text("\n".join(f"line {i} of some plain text to train on" for i in range(40)))
    plain = DataConfig(corpus=str(text))
    plain_data = load_lm_data(plain)
    pretrain(lstm.replace(vocab_size=plain_data.tokenizer.vocab_size), TRAIN.replace(max_steps=2), plain,
             tmp_path / "plain", data=plain_data, callbacks=[TimelineRecorder()])
    assert not timeline_path(tmp_path / "plain").exists()  # nothing to record: no file


def test_the_largest_rise_is_the_hand_picked_head_and_no_change_is_no_rise():
    from labkit.inspect.timeline import Snapshot, largest_rise

    def snap(step: int, grid: list[list[float]]) -> Snapshot:
        return Snapshot(step, ["a"], head_stats={"induction": np.array(grid)})

    flat = [snap(100, [[0.0, 0.02]]), snap(200, [[0.0, 0.02]]), snap(300, [[0.004, 0.02]])]
    assert largest_rise(flat, "induction") is None  # 0.00 -> 0.00 (or 0.004) is not a rise
    assert largest_rise(flat[:1], "induction") is None and largest_rise(flat, "entropy") is None
    forming = [snap(100, [[0.0, 0.02]]), snap(200, [[0.05, 0.03]]), snap(300, [[0.61, 0.03]])]
    rise = largest_rise(forming, "induction")
    assert (rise.layer, rise.head, rise.from_step, rise.to_step) == (0, 0, 200, 300)
    assert (rise.before, rise.after) == pytest.approx((0.05, 0.61))
