"""What the notebooks share, so that they hold no model or training code of their own: the
recipes (display helpers are labkit.notebook_display, re-exported here as nbk.<name>).

- `start(notebook)`: the house style for every figure (labkit.notebook_display.house_style),
  the size profile (`LABKIT_PROFILE=smoke|cpu|gpu`; default gpu when torch sees
  CUDA, else cpu), the device, which corpora are at hand, and where runs go (`LABKIT_RUNS`, else
  `runs/notebooks` in the checkout). smoke never downloads and falls back to the synthetic corpus
  and task when the real files are not on disk; cpu and gpu download them if needed.
- `length_scale`: `LABKIT_SCALE`, a fraction of every training length a profile runs (a bounded
  check of the gpu profile, benchmarks/gpu_check.py; default 1).
- `lm_recipe` / `finetune_recipe`: the sizes each profile trains at (tiny presets on a slice,
  tiny presets on all of WikiText-2, the classic presets).
- `budget_runs`: notebook 04's race, each family's own recipe for the same training time and then
  the same FLOPs, at the profile's size (labkit.experiments.match_budgets).
- `probe_pair`: an LSTM and a Transformer of the same size trained on the same tokens of one of
  labkit's synthetic probes (agreement, copy), at the profile's size (labkit.experiments).
- the fine-tuning task: SST-2, or a stand-in (labkit.data.tasks). The measurements the notebooks
  plot live in labkit.inspect.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labkit import experiments
from labkit.data import DataConfig, locate
from labkit.data.tasks import TaskData, TextEncoder, load_task
from labkit.device import use_cpu_threads
from labkit.errors import LabkitError
from labkit.inspect.bertviz_offline import model_view_height
from labkit.models import config_from_dict
from labkit.notebook_display import CARD_FIELDS, LiveCurves, card_table, fmt_ppl, house_style, html_frame, say
from labkit.presets import resolve_preset
from labkit.runs import RunDir, remove_run
from labkit.train.adapt import lm_steps
from labkit.train.finetune import FinetuneConfig, finetune, task_tokenizer, train_config
from labkit.train.trainer import TrainConfig

__all__ = ["BIG_LM_SIZE", "BUDGET_SIZES", "CARD_FIELDS", "FINETUNE_SIZES", "IMDB_LM_STEPS", "LM_SIZES", "PROBE_SIZES",
           "PROFILES", "Lab", "LiveCurves",
           "Recipe", "budget_recipes", "budget_runs", "card_table", "finetune_recipe", "finetune_run", "fmt_ppl",
           "generation_speed", "house_style", "html_frame", "length_scale", "lm_recipe", "load_finetune_task",
           "model_view_height", "probe_pair", "profile_name", "runs_root", "say", "start"]

PROFILES = ("smoke", "cpu", "gpu")
CORPUS_FILES = {"wikitext-2": ("train.txt", "valid.txt", "test.txt"), "sst2": ("train.tsv", "dev.tsv"),
                "wikitext-103": ("train.txt", "valid.txt", "test.txt"), "imdb": ("unsup.txt",)}

# Per profile: the preset size and what changes in it. smoke: seconds; cpu: a few minutes on a
# laptop; gpu: the classic presets on all of WikiText-2.
LM_SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"size": "tiny", "train": dict(max_steps=30, eval_every=15, log_every=5),
              "data": dict(max_vocab=5000, train_tokens=50_000, eval_tokens=5_000)},
    "cpu": {"size": "tiny", "train": dict(max_steps=2000, eval_every=250, log_every=10),
            "data": dict(max_vocab=10_000, train_tokens=None, eval_tokens=50_000)},
    "gpu": {"size": "classic", "train": {}, "data": {}},
}
# The gpu profile where WikiText-103 is at hand (downloaded if need be, 190 MB): the medium presets
# (a 2 x 650 LSTM, a 6-layer 512-wide Transformer) on it, its vocabulary cut to 50,000 words. The
# Transformer (05's body) reads 164M tokens (1.6 epochs), the LSTM 42M. Sized by arithmetic to
# about half an hour on one GPU together, not measured: benchmarks/gpu.sh measures the medium
# presets' tokens/s, from which the time follows (docs/guide.md, "Bigger corpora").
BIG_LM_SIZE: dict[str, Any] = {"size": "medium", "data": dict(max_vocab=50_000),
                               "train": {"lstm": dict(max_steps=60_000), "transformer": dict(max_steps=20_000)}}
PROBE_SIZES = experiments.PROBE_SIZES  # (notebook 04)
# Notebook 04's race: each family's own recipe for the same training time, then the same FLOPs
# (labkit.experiments.match_budgets), per seed; `items` agreement and copy items per distance or
# length. smoke: seconds; cpu: the demo recipes (the laptop ones cut to a minute), about 10
# minutes for both seeds; gpu: the laptop recipes, 5 minutes each (docs/results.md has them at 10
# minutes on a 2-core CPU).
BUDGET_SIZES: dict[str, dict[str, Any]] = {
    "smoke": dict(size="tiny", seconds=1.0, seeds=(0, 1), items=4, data=LM_SIZES["smoke"]["data"]),
    "cpu": dict(size="demo", seconds=60.0, seeds=(0, 1), items=50, data={}),
    "gpu": dict(size="laptop", seconds=300.0, seeds=(0, 1), items=100, data=dict(max_vocab=50_000)),
}
IMDB_LM_STEPS = 3000  # the gpu profile's LM step with IMDB's reviews: 24.6M tokens for the medium Transformer
FINETUNE_SIZES: dict[str, dict[str, Any]] = {
    "smoke": dict(epochs=1, max_steps=12, eval_every=4, val_size=200, patience=100, lm_steps=2),
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


def length_scale(value: str | None = None) -> float:
    """`value` or `$LABKIT_SCALE`: the fraction of its profile's training length a notebook runs
    (unset: 1, all of it). At 0.01 the gpu profile trains the same models on the same data and
    device for a hundredth of the steps, seconds and probe tokens, fine-tuning and its language-
    model step included: a check that it runs, in minutes (benchmarks/gpu_check.py), whose numbers
    mean nothing. Evaluation intervals are kept (a cut run evaluates less often), and the notebooks'
    text still quotes the profile's full lengths."""
    text = (os.environ.get("LABKIT_SCALE", "") if value is None else value).strip()
    try:
        scale = float(text) if text else 1.0
    except ValueError:
        scale = math.nan
    if not 0 < scale <= 1:  # (NaN fails too)
        raise LabkitError(f"LABKIT_SCALE={text!r}: a fraction of the profile's training length, in (0, 1]")
    return scale


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
    scale: float = 1.0  # the fraction of the profile's training lengths to run (length_scale)
    wikitext103: Path | None = None  # the gpu profile's corpus where it is at hand (BIG_LM_SIZE)
    imdb: Path | None = None  # IMDB's unlabelled reviews: the gpu profile's fine-tuning reads them too

    @property
    def corpus(self) -> str:
        return "wikitext-103" if self.wikitext103 else "wikitext-2" if self.wikitext else "synthetic"

    @property
    def real_task(self) -> bool:
        """SST-2 needs a WikiText vocabulary: both real, or both synthetic."""
        return bool(self.sst2 and self.wikitext)

    def cut(self, amount: float) -> float:
        """A training length (steps, seconds, tokens) times `scale`: a whole number stays one and
        at least 1 (0 stays 0)."""
        if isinstance(amount, int):
            return max(1, math.ceil(amount * self.scale)) if amount else 0
        return amount * self.scale

    def run_path(self, name: str, *, fresh: bool = True) -> Path:
        """`<runs>/<notebook>-<name>-<profile>`; with `fresh`, an earlier run there is removed
        (refused while a process, another kernel say, is writing it)."""
        path = self.runs / f"{self.notebook}-{name}-{self.profile}"
        if fresh and path.exists():
            if not RunDir(path).exists() and any(path.iterdir()):
                raise LabkitError(f"{path} exists and is not a labkit run; move it away")
            remove_run(RunDir(path))
        return path

    def finished_run(self, name: str, notebook: str | None = None) -> Path | None:
        """A finished run `<notebook>-<name>-<profile>` (another notebook's too), or None."""
        path = self.runs / f"{notebook or self.notebook}-{name}-{self.profile}"
        try:
            card = RunDir(path).read_card()
        except LabkitError:
            return None
        return path if card.get("status") == "finished" else None


def start(notebook: str, *, sst2: bool = False, quiet: bool = False) -> Lab:
    """Pick the profile, device, data and runs folder, and say so."""
    profile, scale = profile_name(), length_scale()
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
    if scale != 1:
        notes.append(f"LABKIT_SCALE={scale:g}: every training length is cut to that fraction of the {profile} "
                     "profile's; the text below still quotes the full lengths.")
    big = corpus_available("wikitext-103", download) if profile == "gpu" and wikitext else None
    reviews = corpus_available("imdb", download) if profile == "gpu" and sst2 and big else None
    if profile == "gpu" and wikitext and not big:
        notes.append("WikiText-103 is not available (put it in $LABKIT_DATA/wikitext-103/, or allow its download): "
                     "the gpu profile trains the classic presets on WikiText-2 instead.")
    lab = Lab(notebook, profile, device, runs_root(), wikitext, sst, notes, scale, big, reviews)
    lab.runs.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    house_style()  # every figure of the notebook in labkit's style, with PNG export
    threads = use_cpu_threads()  # the cores other work leaves free (LABKIT_THREADS to choose)
    if not quiet:
        why = "from LABKIT_PROFILE" if os.environ.get("LABKIT_PROFILE") else "default: LABKIT_PROFILE is unset"
        print(f"profile: {profile} ({why}) | device: {device} | torch threads: {threads}")
        print(f"data: {f'{lab.corpus} in ' + str(big or wikitext) if wikitext else 'synthetic corpus'}"
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
    sizes = BIG_LM_SIZE if lab.wikitext103 else LM_SIZES[lab.profile]
    preset = resolve_preset(sizes["size"], family)
    data = DataConfig(corpus=lab.corpus, **(preset["data"] | sizes["data"]))
    changes = sizes["train"]
    if lab.wikitext103:  # its steps are set per family
        changes = changes["transformer" if family == "transformer" else "lstm"]
    settings = preset["train"] | changes | {"device": str(lab.device)} | train
    settings |= {k: lab.cut(settings[k]) for k in ("max_steps", "warmup_steps", "time_budget_s") if settings.get(k)}
    train_config = TrainConfig.from_dict(settings)
    return Recipe(config_from_dict(preset["model"]), train_config, data)


def budget_recipes(lab: Lab, seed: int = 0, evals: int = 4) -> tuple[dict[str, tuple[Any, TrainConfig]], DataConfig]:
    """The LSTM's and the Transformer's recipes at `lab.profile`'s size (`BUDGET_SIZES`) with
    `seed`, validating `evals` times along the time budget, and the data config they share."""
    size = BUDGET_SIZES[lab.profile]
    recipes, datas = {}, []
    for family in ("lstm", "transformer"):
        preset = resolve_preset(size["size"], family)
        datas.append(DataConfig(corpus=lab.corpus, **(preset["data"] | size["data"])))
        train = TrainConfig.from_dict(preset["train"] | {"seed": seed, "device": str(lab.device), "eval_every": 10**7,
                                                         "eval_every_s": lab.cut(size["seconds"]) / evals})
        recipes[family] = (config_from_dict(preset["model"]), train)
    if datas[0] != datas[1]:
        raise LabkitError(f"the {size['size']} presets of the two families read different data")
    return recipes, datas[0]


def budget_runs(lab: Lab, seed: int, data: Any = None, callbacks: Any = None) -> dict[str, dict[str, Any]]:
    """`labkit.experiments.match_budgets` on `budget_recipes(lab, seed)`, into
    `<runs>/04-<family>-<budget>-s<seed>-<profile>` (earlier runs there are replaced)."""
    recipes, data_config = budget_recipes(lab, seed)
    for family in recipes:  # the thriftier family trains no FLOPs run of its own: no stale one stays
        lab.run_path(f"{family}-flops-s{seed}")

    def where(budget: str, family: str) -> Path:
        return lab.run_path(f"{family}-{budget}-s{seed}")

    return experiments.match_budgets(recipes, data_config, where, lab.cut(BUDGET_SIZES[lab.profile]["seconds"]), data=data,
                                     callbacks=callbacks)


def probe_pair(lab: Lab, task: str, *, progress: bool = True) -> experiments.ProbePair:
    """`labkit.experiments.probe_pair` at the profile's size (`PROBE_SIZES`), into
    `<runs>/<notebook>-<task>-<family>-<profile>` (earlier runs there are replaced)."""
    if task not in experiments.PROBE_CORPORA:
        raise LabkitError(f"task must be one of {', '.join(experiments.PROBE_CORPORA)}, got {task!r}")
    names = {family: lab.run_path(f"{task}-{family}").name for family in ("lstm", "transformer")}  # clears old runs
    return experiments.probe_pair(task, lab.cut(PROBE_SIZES[lab.profile][task]), lab.runs, names, device=str(lab.device),
                                  eval_tokens=2_000 if lab.profile == "smoke" else None, progress=progress)


def finetune_recipe(lab: Lab, **changes: Any) -> FinetuneConfig:
    """labkit's fine-tuning recipe at the profile's size, on the task `load_finetune_task` loads."""
    task = "sst2" if lab.real_task else "number"
    data_dir = str(lab.sst2) if lab.real_task else None
    # where IMDB is at hand (the gpu profile), the LM step reads its 50,000 unlabelled movie reviews too
    reviews = dict(lm_text="all+unsup", lm_steps=IMDB_LM_STEPS) if lab.imdb and lab.real_task else {}
    return FinetuneConfig(**({"task": task, "data_dir": data_dir} | FINETUNE_SIZES[lab.profile] | reviews
                             | {"device": str(lab.device)} | changes))


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


def load_finetune_task(lab: Lab, tokenizer: Any, config: FinetuneConfig) -> TaskData:
    """The task of `config` (from `finetune_recipe`: SST-2, or the synthetic number task when SST-2
    or WikiText-2 is missing) encoded for `tokenizer`; all of train: take subsets with `TaskData.subset`."""
    tokenizer = task_tokenizer(config, tokenizer)  # the run's words and the task's that it lacks
    return load_task(config.task, TextEncoder(tokenizer), data_dir=config.data_dir, val_size=config.val_size)


def finetune_run(lab: Lab, base: str | Path, task: TaskData, name: str, *, on_eval: Any = None,
                 **changes: Any) -> dict[str, Any]:
    """Fine-tune `base` on `task` (cut to `train_size` examples when given) with the profile's
    settings plus `changes`; the run goes to `lab.run_path(name)`. Returns its card."""
    config = finetune_recipe(lab, **changes)
    data = task.subset(config.train_size, config.seed)
    if lab.scale != 1:  # its steps cut (epochs, or fewer steps: what it would train), and its LM step's
        steps = train_config(config, len(data.train)).max_steps
        config = config.replace(max_steps=lab.cut(steps),
                                lm_steps=lab.cut(lm_steps(config, RunDir(base).load_config()["model"])))
    return finetune(base, config, lab.run_path(name), data=data, callbacks=[OnEval(on_eval)] if on_eval else ())


class OnEval:
    """A Trainer callback that hands each evaluation record to `fn(record)`."""

    def __init__(self, fn: Any):
        self.fn = fn

    def on_eval(self, trainer: Any, record: dict[str, Any]) -> None:
        self.fn(record)
