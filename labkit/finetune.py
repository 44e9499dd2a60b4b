"""Fine-tuning a pretrained language model on a classification task (SST-2 sentiment).

The comparison this module exists for is one flag apart: the same network, with the weights
it learned as a language model (`from_scratch=False`) or with random ones (`from_scratch=True`),
trained on the same labelled sentences for the same budget.

Modes: `full` (every weight trains; the body at `lr_body`, the new head at `lr_head`),
`frozen` (the body is a fixed feature extractor; only the head trains), `gradual` (ULMFiT:
the head alone first, then one more layer group from the top each epoch).

Model selection uses a validation split held out from SST-2 train; SST-2 dev, whose labels
GLUE publishes (its test labels are private), is the reported test set and is read once, at
the end, with the best weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from labkit import __version__
from labkit.config import JSONConfig
from labkit.data.batching import ClassificationBatches, pad_batch
from labkit.data.corpora import sst2
from labkit.data.normalize import CaseMapper, sst_to_wikitext
from labkit.data.tokenizers import Tokenizer, WordTokenizer
from labkit.device import autocast, denormals_flushed, pick_device, resolve_precision, tune_for_training
from labkit.errors import LabkitError, RunError
from labkit.models import ClassifierConfig, SequenceClassifier, count_parameters
from labkit.pretrain import load_run
from labkit.rundir import RunDir, load_weights
from labkit.train.metrics import MetricsWriter
from labkit.train.schedule import lr_at

TASKS = {"sst2": ("negative", "positive")}
MODES = ("full", "frozen", "gradual")


@dataclass
class FinetuneConfig(JSONConfig):
    task: str = "sst2"
    mode: str = "full"
    from_scratch: bool = False
    pooling: str | None = None  # None: "last" for an RNN, "mean" for a Transformer
    lr_body: float = 5e-4
    lr_head: float = 2e-3
    weight_decay: float = 0.01
    epochs: int = 3
    max_steps: int | None = None  # stop earlier than `epochs` (equal budgets across runs)
    batch_size: int = 32
    max_len: int = 64
    train_size: int | None = None  # labelled training sentences to use (a learning curve)
    val_size: int = 2000  # held out from SST-2 train for model selection
    eval_every: int = 200
    patience: int = 4  # evaluations without a better validation accuracy before stopping
    dropout: float = 0.1
    data_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.train_size is not None and self.train_size < 1:
            raise ValueError("train_size must be at least 1")
        for name in ("epochs", "batch_size", "max_len", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass
class TaskData:
    train: list[tuple[list[int], int]]
    val: list[tuple[list[int], int]]
    test: list[tuple[list[int], int]]
    labels: tuple[str, ...]
    oov_rate: float  # share of tokens that map to <unk> after normalisation


class TextEncoder:
    """Sentence -> ids under a pretrained tokenizer, with SST -> WikiText normalisation."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        word = isinstance(tokenizer, WordTokenizer) and tokenizer.kind == "whitespace"
        self.case = CaseMapper(tokenizer.vocab) if word else None

    def __call__(self, sentence: str) -> list[int]:
        text = sst_to_wikitext(sentence)
        if self.case is not None:
            text = self.case.sentence(text)
        return self.tokenizer.encode(text)


def load_task(config: FinetuneConfig, encode: TextEncoder) -> TaskData:
    rows = sst2("train", config.data_dir)
    generator = torch.Generator().manual_seed(1234)  # one fixed split for every run
    order = torch.randperm(len(rows), generator=generator).tolist()
    val_rows = [rows[i] for i in order[: config.val_size]]
    train_rows = [rows[i] for i in order[config.val_size:]]
    if config.train_size is not None:
        if config.train_size > len(train_rows):
            raise LabkitError(f"--train-size {config.train_size} exceeds the {len(train_rows)} "
                              "training sentences left after the validation split")
        sub = torch.Generator().manual_seed(config.seed)
        train_rows = [train_rows[i] for i in torch.randperm(len(train_rows), generator=sub)
                      [: config.train_size].tolist()]
    test_rows = sst2("dev", config.data_dir)
    unk, total = encode.tokenizer.unk_id, 0
    unknown = 0

    def encode_all(part: list[tuple[str, int]]) -> list[tuple[list[int], int]]:
        nonlocal total, unknown
        out = []
        for sentence, label in part:
            ids = encode(sentence)
            total += len(ids)
            unknown += sum(i == unk for i in ids)
            out.append((ids, label))
        return out

    train, val, test = encode_all(train_rows), encode_all(val_rows), encode_all(test_rows)
    return TaskData(train, val, test, TASKS[config.task], unknown / max(total, 1))


def build_classifier(base_config: dict[str, Any], config: FinetuneConfig) -> SequenceClassifier:
    family = base_config["family"]
    pooling = config.pooling or ("last" if family == "rnn" else "mean")
    return SequenceClassifier(ClassifierConfig(body=base_config, n_classes=len(TASKS[config.task]),
                                               pooling=pooling, dropout=config.dropout))


class FineTuner:
    def __init__(self, model: SequenceClassifier, data: TaskData, config: FinetuneConfig,
                 run: RunDir | None = None, on_eval=None):
        self.model, self.data, self.config, self.run = model, data, config, run
        self.device = pick_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        tune_for_training(self.device)
        self.model.to(self.device)
        self.groups = model.layer_groups()
        self.on_eval = on_eval
        self.metrics = MetricsWriter(run.metrics_path) if run else None
        self.pad_id = 0
        body = [p for g in self.groups for p in g]
        self.optimizer = torch.optim.AdamW(
            [{"params": body, "lr": config.lr_body, "base_lr": config.lr_body},
             {"params": list(model.head.parameters()), "lr": config.lr_head, "base_lr": config.lr_head}],
            weight_decay=config.weight_decay)

    def _set_trainable(self, epoch: int) -> None:
        """frozen: head only; full: everything; gradual: head plus `epoch` groups from the top."""
        mode = self.config.mode
        n = {"frozen": 0, "full": len(self.groups)}.get(mode, epoch)
        for k, group in enumerate(self.groups):
            for p in group:
                p.requires_grad_(k < n)
        # A frozen body is a fixed feature extractor: no dropout noise in it.
        self.model.body.train(n > 0)

    def batches(self, examples, shuffle: bool, epoch: int = 0) -> ClassificationBatches:
        b = ClassificationBatches(examples, self.config.batch_size, shuffle=shuffle,
                                  seed=self.config.seed, pad_id=self.pad_id, max_len=self.config.max_len)
        b.load_state_dict({"epoch": epoch, "position": 0})
        return b

    @torch.inference_mode()
    def evaluate(self, examples) -> dict[str, Any]:
        self.model.eval()
        n = len(self.data.labels)
        confusion = torch.zeros(n, n, dtype=torch.long)  # rows: true label, columns: predicted
        loss = 0.0
        for batch in self.batches(examples, shuffle=False):
            batch = batch.to(self.device)
            with autocast(self.device, self.precision):
                logits = self.model(batch.ids, batch.mask).float()
            loss += F.cross_entropy(logits, batch.labels, reduction="sum").item()
            for t, p in zip(batch.labels.tolist(), logits.argmax(-1).tolist()):
                confusion[t, p] += 1
        return classification_report(confusion, loss, self.data.labels)

    def fit(self) -> dict[str, Any]:
        c = self.config
        torch.manual_seed(c.seed)
        steps_per_epoch = math.ceil(len(self.data.train) / c.batch_size)
        total = min(c.max_steps or math.inf, steps_per_epoch * c.epochs)
        step, best, bad_evals, start = 0, -1.0, 0, time.perf_counter()
        stop = False
        for epoch in range(c.epochs):
            self._set_trainable(epoch)
            self.model.head.train()
            for batch in self.batches(self.data.train, shuffle=True, epoch=epoch):
                batch = batch.to(self.device)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr_at(step, group["base_lr"], warmup=max(1, total // 20),
                                        total=int(total), min_ratio=0.0)
                with denormals_flushed(self.device):
                    with autocast(self.device, self.precision):
                        logits = self.model(batch.ids, batch.mask).float()
                    loss = F.cross_entropy(logits, batch.labels)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                if self.metrics and step % 10 == 0:
                    self.metrics.write({"step": step, "epoch": epoch, "loss": loss.item(),
                                        "lr": self.optimizer.param_groups[1]["lr"],
                                        "elapsed_s": round(time.perf_counter() - start, 3)})
                if step % c.eval_every == 0 or step >= total:
                    val = self.evaluate(self.data.val)
                    self._set_trainable(epoch)
                    self.model.head.train()
                    record = {"step": step, "epoch": epoch, "val_loss": val["loss"],
                              "val_accuracy": val["accuracy"]}
                    if self.metrics:
                        self.metrics.write(record)
                    if self.on_eval:
                        self.on_eval(record)
                    if val["accuracy"] > best:
                        best, bad_evals = val["accuracy"], 0
                        if self.run:
                            self.run.save_best(self.model, {"step": str(step)})
                        else:
                            self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    else:
                        bad_evals += 1
                    stop = bad_evals >= c.patience or step >= total
                if stop:
                    break
            if stop:
                break
        if self.run:
            load_weights(self.model, self.run.weights_path)
        else:
            self.model.load_state_dict(self._best_state)
        test = self.evaluate(self.data.test)
        return {"status": "finished", "labkit_version": __version__, "task": c.task, "mode": c.mode,
                "from_scratch": c.from_scratch, "steps": step, "epochs_run": epoch + 1,
                "train_size": len(self.data.train), "val_accuracy": best,
                "accuracy": test["accuracy"], "test_loss": test["loss"],
                "confusion_matrix": test["confusion_matrix"], "precision": test["precision"],
                "recall": test["recall"], "labels": list(self.data.labels),
                "oov_rate": self.data.oov_rate,
                "parameters": count_parameters(self.model),
                "trainable_parameters_final": count_parameters(self.model, trainable_only=True),
                "wall_time_s": round(time.perf_counter() - start, 2), "device": str(self.device)}


def classification_report(confusion: torch.Tensor, loss_sum: float, labels) -> dict[str, Any]:
    total = int(confusion.sum())
    correct = int(confusion.diag().sum())
    predicted = confusion.sum(0).clamp(min=1)
    actual = confusion.sum(1).clamp(min=1)
    return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1),
            "confusion_matrix": confusion.tolist(),
            "precision": dict(zip(labels, (confusion.diag() / predicted).tolist())),
            "recall": dict(zip(labels, (confusion.diag() / actual).tolist()))}


def finetune(base_run: str | Path, config: FinetuneConfig, out: str | Path, *,
             on_eval=None, data: TaskData | None = None) -> dict[str, Any]:
    """Fine-tune (or, with `from_scratch`, train afresh) the network of `base_run` on the task.

    `data`: the task already encoded with the base run's tokenizer (a notebook encodes SST-2 once
    for many runs); it is used as given, `config.train_size` does not cut it."""
    base = load_run(base_run)
    if base.config.get("kind") != "lm":
        raise RunError(f"{base_run} is not a language-model run (kind {base.config.get('kind')!r}); "
                       "fine-tune a run made by `labkit pretrain`")
    run = RunDir(out)
    if run.exists():
        raise RunError(f"{run.root} already holds a run; choose another --name")
    if data is None:
        data = load_task(config, TextEncoder(base.tokenizer))
    torch.manual_seed(config.seed)
    model = build_classifier(base.config["model"], config)
    if not config.from_scratch:
        model.body.load_state_dict(base.model.state_dict())
    run.root.mkdir(parents=True, exist_ok=True)
    base.tokenizer.save(run.tokenizer_path)
    run.save_config({"kind": "classifier", "labkit_version": __version__,
                     "model": model.config.to_dict(), "finetune": config.to_dict(),
                     "base_run": str(Path(base_run)), "labels": list(data.labels)})
    tuner = FineTuner(model, data, config, run, on_eval=on_eval)
    tuner.pad_id = base.tokenizer.pad_id
    run.write_card({"status": "running", "task": config.task})
    card = tuner.fit() | {"base_run": str(Path(base_run))}
    run.write_card(card)
    return card


@dataclass
class Prediction:
    label: str
    prob: float
    probs: dict[str, float]


class Classifier:
    """A fine-tuned run, loaded for predictions."""

    def __init__(self, path: str | Path):
        loaded = load_run(path)
        if loaded.config.get("kind") != "classifier":
            raise RunError(f"{path} is not a fine-tuned classifier run; make one with `labkit finetune`")
        self.model = loaded.model
        self.labels = tuple(loaded.config["labels"])
        self.tokenizer = loaded.tokenizer
        self.encode = TextEncoder(self.tokenizer)
        self.max_len = loaded.config["finetune"]["max_len"]

    @torch.inference_mode()
    def predict(self, sentence: str) -> Prediction:
        if not sentence.strip():
            raise LabkitError("the sentence is empty; give some text to classify")
        ids = self.encode(sentence.lower())[: self.max_len]
        batch, _, mask = pad_batch([ids], self.tokenizer.pad_id)
        probs = F.softmax(self.model(batch, mask).float(), -1)[0]
        k = int(probs.argmax())
        return Prediction(self.labels[k], float(probs[k]), dict(zip(self.labels, probs.tolist())))
