"""The trainer, schedules, run directories and resume, on tiny models and a made-up corpus."""

import json
import math
import os
import signal

import pytest
import torch

from labkit.data import LMData, WordTokenizer
from labkit.errors import LabkitError, RunError
from labkit.runs import MetricsWriter, RunDir, list_runs, load_state, read_metrics, safe_run_path
from labkit.train import Callback, History, TrainConfig, Trainer, TrainingStopped
from labkit.train.schedule import PlateauDivider, lr_at, scheduled_lr

from toy import tiny_model, toy_data, train_config


class StopAt(Callback):
    """Behaves like Ctrl-C (or `kill`) arriving during step `step`: a real signal to this process."""

    def __init__(self, step: int, signum: int = signal.SIGINT):
        self.step, self.signum = step, signum

    def on_step(self, trainer, record):
        if record["step"] == self.step:
            os.kill(os.getpid(), self.signum)


# --- schedules ---------------------------------------------------------------------------
def test_warmup_then_cosine():
    lrs = [lr_at(s, 1.0, warmup=10, total=110, min_ratio=0.1) for s in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way down the cosine
    assert lrs[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(500, 2.0, warmup=0, total=10, kind="constant") == 2.0


def test_a_warmup_share_fits_the_warmup_to_the_steps_a_budget_holds():
    c = TrainConfig(lr=1.0, warmup_steps=300, warmup_share=0.25, time_budget_s=100.0, max_steps=10**6, min_lr_ratio=0.0)
    fixed = c.replace(warmup_share=None)
    # 4 steps a second: 400 steps fit in the budget, so the warm-up is 100 steps, not 300
    assert scheduled_lr(c, 40, 10.0) == pytest.approx(41 / 100)
    assert scheduled_lr(fixed, 40, 10.0) == pytest.approx(41 / 300)
    # a third of the way down the cosine from step 100 to 400: 0.5 * (1 + cos(pi / 3)) = 0.75
    assert scheduled_lr(c, 200, 50.0) == pytest.approx(0.75)
    assert scheduled_lr(fixed, 200, 50.0) == pytest.approx(201 / 300)
    # a fast machine (2,000 steps in the budget) keeps the fixed warm-up
    assert scheduled_lr(c, 200, 10.0) == scheduled_lr(fixed, 200, 10.0) == pytest.approx(201 / 300)
    # a run counted in steps: a quarter of max_steps
    steps = c.replace(time_budget_s=None, max_steps=400)
    assert scheduled_lr(steps, 49, 0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="warmup_share"):
        TrainConfig(warmup_share=1.0)


def test_plateau_divider_divides_by_four_on_a_stall():
    p = PlateauDivider(20.0)
    assert p.update(5.0) == 20.0
    assert p.update(4.0) == 20.0
    assert p.update(4.5) == 5.0
    q = PlateauDivider(1.0)
    q.load_state_dict(p.state_dict())
    assert q.lr == 5.0 and q.best == 4.0


# --- training ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_loss_goes_down_and_card_is_complete(family, tmp_path):
    torch.manual_seed(0)  # the same initial weights whatever ran before
    data = toy_data()
    history = History()
    model = tiny_model(family, data.tokenizer.vocab_size, dropout=0.0)
    card = Trainer(model, data, train_config(max_steps=60, eval_every=30, lr=3e-2),
                   RunDir(tmp_path), [history]).fit()
    losses = [r["loss"] for r in history.steps]
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5
    assert card["status"] == "finished" and card["steps"] == 60
    # RNN windows at the end of an epoch are shorter; random Transformer windows never are.
    assert card["tokens_seen"] == history.steps[-1]["tokens"]
    assert card["tokens_seen"] == 60 * 4 * 12 if family == "transformer" else card["tokens_seen"] > 55 * 48
    assert card["test_ppl"] == pytest.approx(math.exp(card["test_loss"]))
    assert card["best_val_ppl"] < data.tokenizer.vocab_size / 2
    assert len(history.evals) == 2  # step 30 and the final one
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 61))
    assert {"tokens", "elapsed_s", "lr", "grad_norm", "tokens_per_s"} <= set(records[0])


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_resume_reproduces_the_uninterrupted_losses(family, tmp_path):
    data = toy_data()
    config = train_config(max_steps=12)

    def run(root, callbacks):
        torch.manual_seed(0)
        return Trainer(tiny_model(family, data.tokenizer.vocab_size), data, config,
                       RunDir(root), callbacks)

    straight = History()
    run(tmp_path / "a", [straight]).fit()

    first = History()
    with pytest.raises(TrainingStopped, match="SIGINT"):
        run(tmp_path / "b", [first, StopAt(5)]).fit()
    rundir = RunDir(tmp_path / "b")
    assert rundir.read_card()["status"] == "interrupted"
    assert rundir.latest_checkpoint().name == "step-00000005"
    second = History()
    trainer = run(tmp_path / "b", [second])
    trainer.resume(rundir.latest_checkpoint())
    trainer.fit()

    a = [r["loss"] for r in straight.steps]
    b = [r["loss"] for r in first.steps] + [r["loss"] for r in second.steps]
    assert len(a) == len(b) == 12
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-6
    steps = [r["step"] for r in read_metrics(rundir.metrics_path) if "loss" in r]
    assert steps == list(range(1, 13))


def test_sigterm_checkpoints_and_stops_like_ctrl_c(tmp_path):
    data = toy_data()
    trainer = Trainer(tiny_model("rnn", data.tokenizer.vocab_size), data, train_config(),
                      RunDir(tmp_path), [StopAt(3, signal.SIGTERM)])
    with pytest.raises(TrainingStopped) as stopped:
        trainer.fit()
    assert stopped.value.signal == signal.SIGTERM and "SIGTERM at step 3" in str(stopped.value)
    assert RunDir(tmp_path).latest_checkpoint().name == "step-00000003"
    assert RunDir(tmp_path).read_card()["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path):
    writer = MetricsWriter(tmp_path / "m.jsonl")
    for step in range(1, 8):
        writer.write({"step": step, "loss": 1.0})
    writer.truncate_after(4)
    assert [r["step"] for r in read_metrics(tmp_path / "m.jsonl")] == [1, 2, 3, 4]


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path):
    data = toy_data()
    model = tiny_model("rnn", data.tokenizer.vocab_size)

    class Poison(Callback):
        def on_checkpoint(self, trainer, record):
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.fill_(float("nan"))

    trainer = Trainer(model, data, train_config(max_steps=10, eval_every=4), RunDir(tmp_path),
                      [Poison()])
    with pytest.raises(TrainingStopped, match=r"weights became not finite \(NaN or inf\) before step 5; "
                                              "the last good checkpoint is kept"):
        trainer.fit()
    run = RunDir(tmp_path)
    assert run.read_card()["status"] == "failed"
    assert run.latest_checkpoint().name == "step-00000004"
    # The checkpoint holds the good weights, written before the poisoning.
    fresh = tiny_model("rnn", data.tokenizer.vocab_size)
    Trainer(fresh, data, train_config(), None).resume(run.latest_checkpoint())
    assert all(torch.isfinite(p).all() for p in fresh.parameters())


def test_metrics_reader_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}]
    MetricsWriter(path).write({"step": 3, "loss": float("nan")})
    assert json.loads(path.read_text().splitlines()[-1]) == {"step": 3, "loss": None}


# --- run directories ---------------------------------------------------------------------
def test_pickle_payload_in_training_state_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "state.pt"
    torch.save({"step": 1, "x": Payload()}, evil)
    with pytest.raises(RunError, match="refusing to load"):
        load_state(evil)
    assert not marker.exists()


def test_checkpoints_appear_whole_and_old_ones_are_pruned(tmp_path):
    run = RunDir(tmp_path)
    model = tiny_model("rnn", 10)
    for step in (1, 2, 3):
        run.save_checkpoint(model, {"step": step}, step)
    (run.checkpoints_dir / ".tmp-half").mkdir()  # what a kill during a write leaves
    assert [p.name for p in run.checkpoints()] == ["step-00000002", "step-00000003"]
    assert load_state(run.latest_checkpoint() / "state.pt") == {"step": 3}


def test_safe_run_path_refuses_escapes(tmp_path):
    assert safe_run_path(tmp_path, "lstm-1") == (tmp_path / "lstm-1").resolve()
    for bad in ("../x", "/etc", "a/../../b", "..", ".", "", "a/b"):
        with pytest.raises(RunError):
            safe_run_path(tmp_path, bad)


def test_list_runs_reports_broken_runs_without_failing(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text("{not json")
    infos = {i.path.name: i for i in list_runs(tmp_path)}
    assert "is it a labkit run" in infos["empty"].error
    assert "corrupt" in infos["corrupt"].error


# --- the whole pretraining path on real data ----------------------------------------------


def test_word_level_perplexity_counts_words_not_tokens():
    data = toy_data()
    data.words_per_token["valid"] = 0.5  # as if a subword tokenizer used two tokens per word
    trainer = Trainer(tiny_model("rnn", data.tokenizer.vocab_size), data, train_config(), None)
    result = trainer.evaluate("valid")
    # Total NLL over the number of words: exp(loss * tokens / words).
    assert result["word_ppl"] == pytest.approx(math.exp(result["loss"] / 0.5))
    assert result["ppl"] == pytest.approx(math.exp(result["loss"]))


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_bf16_autocast_on_cpu_trains_where_the_cpu_has_bf16_else_is_refused(family):
    from labkit.device import cpu_has_bf16

    data = toy_data()
    history = History()
    config = train_config(max_steps=3, precision="bf16")
    if not cpu_has_bf16():  # oneDNN has no bf16 LSTM kernel there: a clear refusal, not its RuntimeError
        with pytest.raises(LabkitError, match="no native bf16 .* use --precision fp32"):
            Trainer(tiny_model(family, data.tokenizer.vocab_size), data, config, None, [history])
        return
    trainer = Trainer(tiny_model(family, data.tokenizer.vocab_size), data, config, None, [history])
    card = trainer.fit()
    assert card["precision"] == "bf16" and len(history.steps) == 3
    assert all(math.isfinite(r["loss"]) for r in history.steps)


class TenthOfASecondPerStep(Callback):
    """A clock set by hand: after step n the run has trained for exactly n / 10 seconds."""

    def on_step(self, trainer, record):
        trainer.elapsed = trainer.step / 10


def test_time_budget_stops_training_and_ends_the_decay(tmp_path):
    data = toy_data()
    trainer = Trainer(tiny_model("rnn", data.tokenizer.vocab_size), data,
                      train_config(max_steps=10_000, time_budget_s=0.5, warmup_steps=0), None,
                      [TenthOfASecondPerStep()])
    card = trainer.fit()
    # 0.1 s a step: the budget of 0.5 s is spent after step 5, and the run stops there
    assert card["steps"] == 5 and card["stopped_by"] == "time budget" and card["wall_time_s"] == 0.5
    # The cosine is spread over the steps that fit in the budget, not over max_steps.
    assert trainer.lr() < 0.5 * trainer.config.lr


def test_measuring_the_matmul_peak_leaves_the_training_random_numbers_alone():
    # the peak is measured on a run's first card: a draw from the global generator there changed
    # the first run's dropout masks, and a resumed process's, so a resume did not reproduce the run
    from labkit.device import matmul_peak
    matmul_peak.cache_clear()
    before = torch.get_rng_state()
    assert matmul_peak(torch.device("cpu"), torch.float32, repeats=1) > 0
    assert torch.equal(torch.get_rng_state(), before)


# --- validation on part of the split, the card's clocks and reasons -------------------------
def test_periodic_validations_read_val_tokens_and_the_end_reads_the_whole_split(tmp_path):
    torch.manual_seed(0)
    data = toy_data()
    whole = data.valid.numel() - 1  # the targets of the validation split
    model = tiny_model("rnn", data.tokenizer.vocab_size, dropout=0.0)
    trainer = Trainer(model, data, train_config(max_steps=6, eval_every=2, val_tokens=40), RunDir(tmp_path))
    starts = []
    trainer.callbacks.append(type("Seen", (Callback,), {"on_eval_start": lambda self, t, r: starts.append(dict(r))})())
    assert trainer.evaluate("valid")["tokens"] == 40 and trainer.evaluate("valid", whole=True)["tokens"] == whole
    card = trainer.fit()
    records = read_metrics(tmp_path / "metrics.jsonl")
    periodic = [r for r in records if "val_loss" in r]
    full = [r for r in records if "val_full_loss" in r]
    assert [r["step"] for r in periodic] == [2, 4, 6] and [r["step"] for r in full] == [6]
    # what the events said each evaluation would read: three parts, the test split, the whole split
    assert [(s["step"], s["split"], s["whole"]) for s in starts] == [
        (2, "valid", False), (4, "valid", False), (6, "valid", False), (6, "test", True), (6, "valid", True)]
    # the card's best figures are the whole split's for the weights kept (the best part's), computed
    # again here from the saved weights; the part's best stays beside them
    best = min(periodic, key=lambda r: r["val_loss"])
    assert card["best_val_loss_part"] == pytest.approx(best["val_loss"])
    from labkit.runs import load_weights
    load_weights(model, tmp_path / "model.safetensors")
    again = trainer.evaluate("valid", whole=True)
    assert card["best_val_loss"] == pytest.approx(again["loss"]) == pytest.approx(full[0]["val_full_loss"])
    assert card["best_val_ppl"] == pytest.approx(math.exp(again["loss"])) and card["val_full_tokens"] == whole
    assert card["val_tokens"] == 40


def test_without_val_tokens_every_validation_reads_the_whole_split(tmp_path):
    data = toy_data()
    trainer = Trainer(tiny_model("rnn", data.tokenizer.vocab_size), data, train_config(max_steps=2, eval_every=1),
                      RunDir(tmp_path))
    assert trainer.evaluate("valid")["tokens"] == data.valid.numel() - 1
    card = trainer.fit()
    assert "val_tokens" not in card and "best_val_loss_part" not in card
    assert not any("val_full_loss" in r for r in read_metrics(tmp_path / "metrics.jsonl"))


def test_the_unigram_level_is_the_hand_counted_one():
    # train: a a a b (+ <eos>s); every line "a b": the add-one unigram model's loss by hand
    tok = WordTokenizer.train(["a a a b"], split="whitespace", specials=("<unk>", "<eos>"))
    train, valid = tok.encode_lines(["a a a b"] * 3), tok.encode_lines(["a b"] * 2)
    data = LMData(tok, train, valid, valid, {"train": 1.0, "valid": 1.0, "test": 1.0})
    from labkit.train.objectives import LanguageModeling
    counts = {t: int((train == t).sum()) + 1 for t in range(tok.vocab_size)}
    total = sum(counts.values())
    by_hand = math.exp(-sum(math.log(counts[int(t)] / total) for t in valid[1:]) / (valid.numel() - 1))
    assert LanguageModeling(data).unigram_val_ppl() == pytest.approx(by_hand)
    assert counts[tok.encode("a")[0]] == 10 and total == 15 + tok.vocab_size  # 9 a, 3 b, 3 <eos>, plus one each


def test_the_card_says_what_stopped_training_and_the_wall_clock(tmp_path):
    data = toy_data()
    steps = Trainer(tiny_model("rnn", data.tokenizer.vocab_size), data, train_config(max_steps=3), RunDir(tmp_path / "a"))
    card = steps.fit()
    assert card["stopped_by"] == "max steps" and card["wall_clock_s"] >= card["wall_time_s"] > 0
    timed = Trainer(tiny_model("rnn", data.tokenizer.vocab_size), data,
                    train_config(max_steps=10**6, time_budget_s=0.3), RunDir(tmp_path / "b"))
    assert timed.fit()["stopped_by"] == "time budget"
    patient = Trainer(tiny_model("rnn", data.tokenizer.vocab_size), data,
                      train_config(max_steps=10**6, eval_every=1, patience=1, lr=1e-9, warmup_steps=0),
                      RunDir(tmp_path / "c"))
    card = patient.fit()
    assert card["stopped_by"] == "patience" and card["steps"] < 10**6


def test_a_running_card_follows_the_steps(tmp_path, monkeypatch):
    """Viewers read a running run's step and tokens from its card: rewritten while it trains."""
    import labkit.train.trainer as trainer_module
    monkeypatch.setattr(trainer_module, "RUNNING_CARD_EVERY_S", 0.0)  # at every logged step
    data = toy_data()
    seen = []

    class ReadCard(Callback):
        def on_step(self, trainer, record):
            card = RunDir(tmp_path).read_card()
            seen.append((card["status"], card["steps"], card["tokens_seen"]))

    Trainer(tiny_model("rnn", data.tokenizer.vocab_size), data, train_config(max_steps=4, log_every=1),
            RunDir(tmp_path), [ReadCard()]).fit()
    # each step's card is written after its callbacks: the one a step's callback reads is the step before's
    assert [s[:2] for s in seen] == [("running", 0), ("running", 1), ("running", 2), ("running", 3)]
    assert seen[-1][2] == 3 * 4 * 12  # batch 4 x 12 tokens a step, 3 steps


# --- a trainer changes nothing of the process for good -------------------------------------
def test_a_trainer_keeps_its_own_random_state_and_leaves_the_callers_alone(tmp_path):
    """Dropout draws from the trainer's own state: building, fitting and evaluating leave the
    process's generator as it was, and a caller drawing numbers between steps (a notebook cell, a
    callback) changes no dropout mask, so the losses are those of a run left alone."""
    data = toy_data()

    class Draws(Callback):
        def on_step(self, trainer, record):
            torch.rand(1000)  # the caller's random numbers, from the global generator

    def losses(callbacks, path):
        torch.manual_seed(0)
        model = tiny_model("transformer", data.tokenizer.vocab_size, dropout=0.3)
        before = torch.get_rng_state()
        history = History()
        trainer = Trainer(model, data, train_config(max_steps=6), RunDir(path), [history, *callbacks])
        assert torch.equal(torch.get_rng_state(), before)
        trainer.fit()
        trainer.evaluate("valid")
        if not callbacks:
            assert torch.equal(torch.get_rng_state(), before)
        return [r["loss"] for r in history.steps]

    alone = losses([], tmp_path / "a")
    assert losses([Draws()], tmp_path / "b") == alone
    # ... and the masks are drawn: the same model without dropout reads other losses
    torch.manual_seed(0)
    history = History()
    Trainer(tiny_model("transformer", data.tokenizer.vocab_size, dropout=0.0), data, train_config(max_steps=6),
            None, [history]).fit()
    assert [r["loss"] for r in history.steps][1:] != alone[1:]


MEMORY_PROBE = """
import json, os, torch
from labkit.device import training_memory

def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def fill_and_free():
    blocks = [torch.ones(256 * 1024) for _ in range(96)]  # 96 blocks of 1 MB, written
    del blocks
    return resident_mb() - start

start = resident_mb()
with training_memory(torch.device("cpu")):
    pass
again = fill_and_free()  # the defaults again, on a heap with no freed blocks in it yet
first, second = training_memory(torch.device("cpu")), training_memory(torch.device("cpu"))
first.__enter__()
kept = fill_and_free()
second.__enter__()
first.__exit__(None, None, None)  # one run ends while another still trains
kept_for_the_other = fill_and_free()
second.__exit__(None, None, None)
after = resident_mb() - start
print(json.dumps(dict(kept=kept, kept_for_the_other=kept_for_the_other, after=after, again=again)))
"""


def test_training_memory_is_kept_while_training_and_handed_back_after():
    """glibc keeps a run's freed blocks while it trains (no page faults on the next step) and hands
    them back when the last run training in the process ends: the resident memory of freed 1 MB
    blocks, inside and after. In a fresh process: the setting is the process's, and a test's
    worker may hold a training thread of another test."""
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's allocator only")
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, timeout=120, check=True)
    mb = json.loads(out.stdout)
    assert mb["kept"] > 64, f"only {mb['kept']:.0f} MB of 96 kept while training"
    assert mb["kept_for_the_other"] > 64, f"handed back while a run still trains: {mb}"
    assert mb["after"] < mb["kept"] - 64, f"still held after training: {mb}"
    assert mb["again"] < 32, f"the defaults again: a freed 1 MB block goes back at once: {mb}"


# --- the contract: a third objective, written here, trains through the one Trainer ----------
class LineFit:
    """An objective that implements labkit.train.contract.Objective and nothing else: fit
    y = 2x + 1 with a linear layer, mean squared error, on 16 points of [-1, 1]."""

    kind, select, shared_keys, test_weights = "line", ("val_mse", "min"), ("mse",), "best"

    def __init__(self) -> None:
        self.epoch = 0
        self.x = torch.linspace(-1, 1, 16)[:, None]
        self.y = 2 * self.x + 1

    def attach(self, trainer) -> None:
        assert trainer.config.batch_size <= 16

    def param_groups(self, model, weight_decay):
        return [{"params": list(model.parameters()), "weight_decay": 0.0, "lr_scale": 1.0}]

    def before_step(self, trainer) -> None:
        pass

    def loss(self, trainer):
        return torch.nn.functional.mse_loss(trainer.forward(self.x), self.y), {"tokens": len(self.x)}

    def step_record(self, loss):
        return {}

    def validates_in_part(self, trainer):
        return False

    @torch.no_grad()
    def evaluate(self, trainer, split, whole=False):
        return {"mse": torch.nn.functional.mse_loss(trainer.model(self.x), self.y).item()}

    def eval_record(self, split, result):
        return {f"{'val' if split == 'valid' else split}_mse": result["mse"]}

    def selection_value(self, result):
        return result["mse"]

    def card(self, trainer, best, test, val_full=None):
        w, b = trainer.model.weight.item(), trainer.model.bias.item()
        return {"best_val_mse": best, "test_mse": test["mse"] if test else None, "w": w, "b": b}

    def state_dict(self, trainer):
        return {"epoch": self.epoch}

    def load_state_dict(self, trainer, state):
        self.epoch = state["epoch"]


def test_a_third_objective_trains_through_the_trainer_by_the_contract_alone():
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    history = History()
    card = Trainer(model, LineFit(), train_config(max_steps=300, eval_every=100, lr=0.05, warmup_steps=0,
                                                  min_lr_ratio=0.0), None, [history]).fit()
    w, b = card["w"], card["b"]
    assert card["kind"] == "line" and card["steps"] == 300 and card["tokens_seen"] == 300 * 16
    assert w == pytest.approx(2.0, abs=1e-3) and b == pytest.approx(1.0, abs=1e-3)
    # the error of the final line, worked out from its two numbers: mean over the points of
    # ((w - 2) x + (b - 1))^2
    xs = [-1 + 2 * i / 15 for i in range(16)]
    by_hand = sum(((w - 2) * x + (b - 1)) ** 2 for x in xs) / 16
    assert card["test_mse"] == pytest.approx(by_hand, rel=1e-3, abs=1e-9)
    assert [r["step"] for r in history.evals] == [100, 200, 300]
    assert card["best_val_mse"] == pytest.approx(min(r["val_mse"] for r in history.evals))
