"""What the notebooks share, so that they hold no model or training code of their own.

- `start(notebook)`: the size profile (`LABKIT_PROFILE=smoke|cpu|gpu`; default gpu when torch sees
  CUDA, else cpu), the device, which corpora are at hand, and where runs go (`LABKIT_RUNS`, else
  `runs/notebooks` in the checkout). smoke never downloads and falls back to the synthetic corpus
  and task when the real files are not on disk; cpu and gpu download them if needed.
- `lm_recipe` / `finetune_recipe`: the sizes each profile trains at (tiny presets on a slice,
  tiny presets on all of WikiText-2, the classic presets).
- `LiveCurves`: a plotly loss curve that grows while the Trainer runs (one figure, many runs).
- `probe_pair`: an LSTM and a Transformer of the same size trained on the same tokens of one of
  labkit's synthetic probes (agreement, copy), at the profile's size.
- a stand-in classification task. The measurements the notebooks plot live in labkit.inspect.
"""

from __future__ import annotations

import html
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import torch
from torch import nn

from labkit.data import DataConfig, load_lm_data, locate
from labkit.data import synthetic as synthetic_corpus
from labkit.errors import LabkitError
from labkit.finetune import FinetuneConfig, TaskData, TextEncoder, load_task

# Measurements the notebooks call as nbk.<name>; they live in labkit.inspect.
from labkit.inspect.budget import BudgetRun, compare_budget, matched_rnn, parameter_count, steps_for
from labkit.models import config_from_dict
from labkit.presets import resolve_preset
from labkit.train.callbacks import Callback, ProgressBar
from labkit.train.trainer import TrainConfig

PROFILES = ("smoke", "cpu", "gpu")
CORPUS_FILES = {"wikitext-2": ("train.txt", "valid.txt", "test.txt"), "sst2": ("train.tsv", "dev.tsv")}

# Per profile: the preset size and what changes in it. smoke: seconds; cpu: a few minutes on a
# laptop; gpu: the classic presets on all of WikiText-2.
LM_SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"size": "tiny", "train": dict(max_steps=30, eval_every=15, log_every=5),
              "data": dict(max_vocab=5000, train_tokens=50_000, eval_tokens=5_000)},
    "cpu": {"size": "tiny", "train": dict(max_steps=2000, eval_every=250, log_every=10),
            "data": dict(max_vocab=10_000, train_tokens=None, eval_tokens=50_000)},
    "gpu": {"size": "classic", "train": {}, "data": {}},
}
# The synthetic probes (notebook 04): training tokens per task and test items per distance or
# length. smoke: four steps, numbers that mean nothing; cpu: about five minutes for the four runs
# (the copy task is learned only in part); gpu: the sizes of benchmarks/probes.py.
PROBE_SIZES: dict[str, dict[str, int]] = {
    "smoke": dict(agreement=32 * 64 * 4, copy=32 * 64 * 4, items=6),
    # agreement is learnt by 4M tokens; the Transformer learns to copy late and suddenly (between 6M
    # and 10M tokens of a 16M-token run, docs/results.md): cpu stops before that, gpu after it
    "cpu": dict(agreement=4_000_000, copy=3_000_000, items=100),
    "gpu": dict(agreement=4_000_000, copy=16_000_000, items=200),
}
PROBE_CORPORA = {"agreement": "synthetic-agreement", "copy": "synthetic-copy"}
# The same settings for both families; 64-token windows hold a whole copy line (up to 41 tokens).
PROBE_TRAIN = dict(lr=1e-3, batch_size=32, seq_len=64, warmup_steps=50, log_every=10, precision="fp32")
FINETUNE_SIZES: dict[str, dict[str, Any]] = {
    "smoke": dict(epochs=1, max_steps=12, eval_every=4, val_size=200, patience=100),
    "cpu": dict(epochs=2, max_steps=400, eval_every=50, val_size=1000),
    "gpu": dict(epochs=3, eval_every=200, val_size=2000),
}


def profile_name(value: str | None = None) -> str:
    """The profile from `value` or `$LABKIT_PROFILE`; unset means gpu with CUDA, else cpu."""
    value = (os.environ.get("LABKIT_PROFILE", "") if value is None else value).strip().lower()
    if not value:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if value not in PROFILES:
        raise LabkitError(f"LABKIT_PROFILE={value!r}: choose one of {', '.join(PROFILES)}")
    return value


def runs_root() -> Path:
    """`$LABKIT_RUNS`, else `runs/notebooks` in the checkout (or the current folder)."""
    if os.environ.get("LABKIT_RUNS"):
        return Path(os.environ["LABKIT_RUNS"]).expanduser()
    checkout = Path(__file__).resolve().parents[1]
    base = checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()
    return base / "runs" / "notebooks"


def corpus_available(dataset: str, download: bool) -> Path | None:
    """The folder holding `dataset`'s files (downloading them if allowed), or None."""
    try:
        paths = [locate(dataset, name, download=download) for name in CORPUS_FILES[dataset]]
    except LabkitError:
        return None
    return paths[0].parent


@dataclass
class Lab:
    notebook: str  # e.g. "02"; prefixes run names
    profile: str
    device: torch.device
    runs: Path
    wikitext: Path | None  # where WikiText-2 was found, None: the synthetic corpus stands in
    sst2: Path | None  # where SST-2 was found, None: a synthetic task stands in
    notes: list[str] = field(default_factory=list)

    @property
    def corpus(self) -> str:
        return "wikitext-2" if self.wikitext else "synthetic"

    @property
    def real_task(self) -> bool:
        """SST-2 needs a WikiText vocabulary: both real, or both synthetic."""
        return bool(self.sst2 and self.wikitext)

    def run_path(self, name: str, *, fresh: bool = True) -> Path:
        """`<runs>/<notebook>-<name>-<profile>`; with `fresh`, an earlier run there is removed."""
        path = self.runs / f"{self.notebook}-{name}-{self.profile}"
        if fresh and path.exists():
            if not (path / "config.json").exists() and any(path.iterdir()):
                raise LabkitError(f"{path} exists and is not a labkit run; move it away")
            shutil.rmtree(path)
        return path

    def finished_run(self, name: str, notebook: str | None = None) -> Path | None:
        """A finished run `<notebook>-<name>-<profile>` (another notebook's too), or None."""
        path = self.runs / f"{notebook or self.notebook}-{name}-{self.profile}"
        try:
            import json

            card = json.loads((path / "card.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return path if card.get("status") == "finished" else None


def start(notebook: str, *, sst2: bool = False, quiet: bool = False) -> Lab:
    """Pick the profile, device, data and runs folder, and say so."""
    profile = profile_name()
    download = profile != "smoke"
    notes = []
    wikitext = corpus_available("wikitext-2", download)
    if wikitext is None:
        notes.append("WikiText-2 is not " + ("on disk (smoke never downloads)" if not download else
                                             "available (no download either)") +
                     ": the synthetic corpus (labkit.data.synthetic) stands in. Set LABKIT_DATA to "
                     "a folder holding wikitext-2/ to use the real text.")
    sst = corpus_available("sst2", download) if sst2 else None
    if sst2 and not (sst and wikitext):
        notes.append("SST-2 " + ("is not available" if not sst else "needs the WikiText-2 vocabulary") +
                     ": a synthetic task stands in (is the subject of a phrase singular or plural?).")
    device = torch.device("cuda") if profile == "gpu" and torch.cuda.is_available() else torch.device("cpu")
    if profile == "gpu" and device.type != "cuda":
        notes.append("profile gpu, but torch sees no GPU: training the real presets on the CPU will be slow.")
    lab = Lab(notebook, profile, device, runs_root(), wikitext, sst, notes)
    lab.runs.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if not quiet:
        why = "from LABKIT_PROFILE" if os.environ.get("LABKIT_PROFILE") else "default: LABKIT_PROFILE is unset"
        print(f"profile: {profile} ({why}) | device: {device} | torch threads: {torch.get_num_threads()}")
        print(f"data: {'WikiText-2 in ' + str(wikitext) if wikitext else 'synthetic corpus'}"
              + (f" | SST-2: {sst if lab.real_task else 'synthetic task'}" if sst2 else ""))
        print(f"runs go to: {lab.runs}")
        for note in notes:
            print("note:", note)
    return lab


# --- recipes ------------------------------------------------------------------------------
@dataclass
class Recipe:
    model: Any  # RNNConfig | TransformerConfig (vocab_size is set from the data)
    train: TrainConfig
    data: DataConfig


def lm_recipe(lab: Lab, family: str = "lstm", **train: Any) -> Recipe:
    """The model, training and data configs of `lab.profile` for `family` (lstm, gru, rnn_tanh,
    rnn_relu, transformer); `train` overrides training settings (max_steps=...)."""
    sizes = LM_SIZES[lab.profile]
    preset = resolve_preset(sizes["size"], family)
    data = DataConfig(corpus=lab.corpus, **(preset["data"] | sizes["data"]))
    train_config = TrainConfig.from_dict(preset["train"] | sizes["train"] | {"device": str(lab.device)} | train)
    return Recipe(config_from_dict(preset["model"]), train_config, data)


@dataclass
class ProbePair:
    task: str  # "agreement" or "copy"
    runs: dict[str, Any]  # "lstm", "transformer" -> LoadedRun (model and tokenizer)
    budget: dict[str, BudgetRun]  # the same -> card and validation curve


def probe_pair(lab: Lab, task: str, *, progress: bool = True) -> ProbePair:
    """Train the tiny Transformer and an LSTM of the same parameter count (`matched_rnn`) on the
    same tokens of the `task` probe ("agreement" or "copy"; `PROBE_SIZES` of the profile) with
    `labkit.inspect.compare_budget`, into `<runs>/<notebook>-<task>-<family>-<profile>`."""
    from labkit.pretrain import load_run

    if task not in PROBE_CORPORA:
        raise LabkitError(f"task must be one of {', '.join(PROBE_CORPORA)}, got {task!r}")
    tokens = PROBE_SIZES[lab.profile][task]
    data_config = DataConfig(corpus=PROBE_CORPORA[task], eval_tokens=2_000 if lab.profile == "smoke" else None)
    data = load_lm_data(data_config)
    vocab = data.tokenizer.vocab_size
    transformer = config_from_dict(resolve_preset("tiny", "transformer")["model"] | {"vocab_size": vocab})
    lstm = matched_rnn(config_from_dict(resolve_preset("tiny", "lstm")["model"]), parameter_count(transformer), vocab)
    train = TrainConfig.from_dict(PROBE_TRAIN | {"device": str(lab.device)})
    steps = steps_for(train, tokens)
    train = train.replace(eval_every=max(1, steps // 4), warmup_steps=min(train.warmup_steps, steps // 5))
    names = {family: lab.run_path(f"{task}-{family}").name for family in ("lstm", "transformer")}  # clears old runs
    callbacks = {name: [ProgressBar(steps, desc=f"{task}: {family}")] for family, name in names.items()
                 if progress}
    budget = compare_budget({names["lstm"]: (lstm, train), names["transformer"]: (transformer, train)}, data_config,
                            lab.runs, tokens, data=data, callbacks=callbacks)
    return ProbePair(task, {family: load_run(budget[name].path, device=lab.device) for family, name in names.items()},
                     {family: budget[name] for family, name in names.items()})


def finetune_recipe(lab: Lab, **changes: Any) -> FinetuneConfig:
    return FinetuneConfig(**(FINETUNE_SIZES[lab.profile] | {"device": str(lab.device)} | changes))


# --- live curves --------------------------------------------------------------------------
X_KEYS = {"step": "step", "tokens": "tokens", "wall time (s)": "elapsed_s"}


class LiveCurves:
    """A plotly figure of training loss (lines) and validation loss (markers) that grows while
    runs train. `callback(name)` gives a Trainer callback for one run; several runs share the
    figure. Redraws at most every `min_interval_s` seconds (and at each evaluation and the end)."""

    def __init__(self, x: str = "tokens", title: str = "", min_interval_s: float = 1.0,
                 display: bool = True):
        if x not in X_KEYS:
            raise LabkitError(f"x must be one of {', '.join(X_KEYS)}")
        self.x, self.min_interval_s = x, min_interval_s
        self.fig = go.Figure(layout=dict(title=title or None, xaxis_title=x, yaxis_title="loss (nats/token)",
                                         height=380, margin=dict(l=10, r=10, t=40 if title else 20, b=10),
                                         legend=dict(orientation="h", y=-0.2)))
        self._last = 0.0
        self._handle = None
        if display:
            from IPython.display import display as ipy_display

            # The figure's own mime bundle, shown raw: plotly's `_ipython_display_` would drop the
            # display id, and every update would then add a new figure instead of redrawing this one.
            self._handle = ipy_display(self._bundle(), raw=True, display_id=True)

    def callback(self, name: str) -> Callback:
        colors = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2")
        color = colors[len(self.fig.data) // 2 % len(colors)]
        self.fig.add_scatter(x=[], y=[], name=name, mode="lines", line=dict(color=color))
        self.fig.add_scatter(x=[], y=[], name=f"{name} val", mode="markers+lines",
                             marker=dict(color=color, size=8, symbol="diamond"),
                             line=dict(color=color, dash="dot", width=1))
        return _LiveRun(self, len(self.fig.data) - 2)

    def add_point(self, trace: int, x: float, y: float, force: bool = False) -> None:
        t = self.fig.data[trace]
        t.x, t.y = (*t.x, x), (*t.y, y)
        now = time.monotonic()
        if force or now - self._last >= self.min_interval_s:
            self.refresh()

    def _bundle(self) -> dict[str, Any]:
        return self.fig._repr_mimebundle_()

    def refresh(self) -> None:
        self._last = time.monotonic()
        if self._handle is not None:
            self._handle.update(self._bundle(), raw=True)


class _LiveRun(Callback):
    def __init__(self, live: LiveCurves, trace: int):
        self.live, self.trace = live, trace

    def _x(self, record: dict[str, Any]) -> float:
        return record[X_KEYS[self.live.x]]

    def on_step(self, trainer: Any, record: dict[str, Any]) -> None:
        self.live.add_point(self.trace, self._x(record), record["loss"])

    def on_eval(self, trainer: Any, record: dict[str, Any]) -> None:
        self.live.add_point(self.trace + 1, self._x(record), record["val_loss"], force=True)

    def on_end(self, trainer: Any, card: dict[str, Any]) -> None:
        self.live.refresh()


# --- measurements -------------------------------------------------------------------------
def generation_speed(model: nn.Module, tokenizer: Any, prompt: str, n_tokens: int, *, use_cache: bool = True,
                     repeats: int = 3) -> tuple[float, str]:
    """Tokens per second of greedy decoding of `n_tokens` (the best of `repeats` timed runs, after
    a warm-up: on a shared machine the best run is the least disturbed one), and the text."""
    from labkit.generate import SamplingConfig, generate

    config = SamplingConfig(temperature=0, max_tokens=n_tokens, stop_at_eos=False)
    generate(model, tokenizer, prompt, SamplingConfig(temperature=0, max_tokens=3), use_cache=use_cache)
    runs = [generate(model, tokenizer, prompt, config, use_cache=use_cache) for _ in range(max(1, repeats))]
    return max(g.tokens_per_second for g in runs), runs[0].text


def number_task_rows(n: int, seed: int) -> list[tuple[str, int]]:
    """`n` noun phrases from the synthetic grammar labelled 0 (singular head) or 1 (plural head).
    Some carry a distractor of the other number ("the dog near the cats"), so the label needs the
    head noun, not the nearest one: a small stand-in for SST-2 when its files are missing."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        plural = rng.random() < 0.5
        subject = synthetic_corpus.subject_phrase(rng, plural, rng.choice(synthetic_corpus.DEMO_DISTANCES))
        rows.append((" ".join(subject.words), int(plural)))
    return rows


def load_finetune_task(lab: Lab, tokenizer: Any, config: FinetuneConfig) -> TaskData:
    """SST-2 encoded for `tokenizer` (all of train: take subsets with `subset`), or the synthetic
    number task when SST-2 or WikiText-2 is missing."""
    if lab.real_task:
        return load_task(config.replace(train_size=None, data_dir=str(lab.sst2)), TextEncoder(tokenizer))
    encode = TextEncoder(tokenizer)
    parts = [[(encode(s), y) for s, y in number_task_rows(n, seed)]
             for n, seed in ((8000, 11), (config.val_size, 12), (872, 13))]
    unk = tokenizer.unk_id
    ids = [i for part in parts for row, _ in part for i in row]
    oov = sum(i == unk for i in ids) / max(1, len(ids))
    return TaskData(*parts, labels=("singular", "plural"), oov_rate=oov)


def subset(task: TaskData, n: int | None, seed: int = 0) -> TaskData:
    """The first `n` training examples of a seeded shuffle (all with None); the same val/test."""
    if n is None or n >= len(task.train):
        return task
    order = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    return TaskData([task.train[i] for i in order], task.val, task.test, task.labels, task.oov_rate)


# --- display ------------------------------------------------------------------------------
def html_frame(document: str, height: int = 500) -> Any:
    """A whole HTML document (such as labkit's offline bertviz views) in an iframe: its scripts
    and globals stay apart from the notebook page, and it draws with no network."""
    from IPython.display import HTML

    return HTML(f'<div class="labkit-frame"><iframe srcdoc="{html.escape(document, quote=True)}" '
                f'style="width:100%;height:{int(height)}px;border:1px solid #ddd"></iframe></div>')


def model_view_height(capture: Any) -> int:
    """Pixels bertviz's model view needs (its own layout rule in bertviz 1.4's model_view.js):
    one row of thumbnails per layer, each token 7 * 12 / heads px tall, or the detail panel."""
    tokens, layers, heads = len(capture.tokens), capture.n_layers, capture.n_heads
    rows = layers * (tokens * 7 * 12 / heads + 10) + 38
    detail = tokens * 18 + 55
    return int(max(rows, detail) + 40)


def say(lines: Sequence[str], title: str = "") -> Any:
    """A markdown list, for a closing summary written from computed numbers."""
    from IPython.display import Markdown

    return Markdown((f"### {title}\n\n" if title else "") + "\n".join(f"- {line}" for line in lines))


CARD_FIELDS = {"parameters": "parameters", "steps": "steps", "tokens_seen": "tokens seen",
               "wall_time_s": "training time (s)", "tokens_per_s": "tokens/s (training)",
               "best_val_ppl": "best val perplexity", "test_ppl": "test perplexity"}


def card_table(cards: dict[str, dict[str, Any]], fields: dict[str, str] | None = None) -> Any:
    """Results cards side by side (one column per run), numbers formatted for reading."""
    import pandas as pd

    def show(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    fields = fields or CARD_FIELDS
    return pd.DataFrame({name: {label: show(card.get(key)) for key, label in fields.items()}
                         for name, card in cards.items()})


def fmt_ppl(loss: float) -> str:
    return f"{math.exp(min(loss, 50)):,.1f}"


def finetune_run(lab: Lab, base: str | Path, task: TaskData, name: str, *, on_eval: Any = None,
                 **changes: Any) -> dict[str, Any]:
    """Fine-tune `base` on `task` (cut to `train_size` examples when given) with the profile's
    settings plus `changes`; the run goes to `lab.run_path(name)`. Returns its card."""
    from labkit.finetune import finetune

    config = finetune_recipe(lab, **changes)
    return finetune(base, config, lab.run_path(name), data=subset(task, config.train_size, config.seed),
                    on_eval=on_eval)
