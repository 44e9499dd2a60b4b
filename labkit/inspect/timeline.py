"""Watch it learn: what a model looks like at each evaluation of its training, from the snapshots
in its run's timeline file (labkit.runs.timeline, written by labkit.recorder).

A snapshot is small on purpose (it is taken at every evaluation, live):

- a Transformer's attention, every layer and head, on one fixed sentence: the run's first
  validation line of 12 to 24 tokens (`choose_sentence`), the same at every step;
- per head: the entropy of its attention on that sentence (nats, mean over queries t >= 1), its
  previous-token share, and its induction score on repeated random tokens
  (labkit.inspect.heads): the moment a copying head forms shows as a jump;
- on labkit's synthetic probe corpora, for either family: agreement accuracy (synthetic,
  synthetic-agreement), copy accuracy (synthetic-copy) or recall accuracy (synthetic-recall).

`measure` takes one; `read_timeline` reads them back, tolerating a missing file, a torn last line
(a run still writing) and lines it cannot make sense of.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from labkit.data.synthetic import agreement_items, copy_item, recall_item, sequence_items
from labkit.errors import LabkitError
from labkit.inspect.attention import head_stats
from labkit.inspect.heads import induction_score
from labkit.inspect.probes import agreement_accuracy, copy_accuracy, overall
from labkit.inspect.running import device_of, eval_mode
from labkit.models.hooks import run_with_cache
from labkit.runs.timeline import read_timeline_records

SENTENCE_TOKENS = (12, 24)  # the fixed sentence: the first validation line of this many tokens
PROBES = {"synthetic": "agreement", "synthetic-agreement": "agreement", "synthetic-copy": "copy",
          "synthetic-recall": "recall"}
PROBE_ITEMS = 2  # per distance or length: 14 items, a few milliseconds
INDUCTION = dict(length=20, batch=4)  # repeated random tokens: (batch, 1 + 2 * length)
DIGITS = 3  # attention weights are stored rounded


@dataclass
class Snapshot:
    step: int
    tokens: list[str]  # the fixed sentence
    attention: np.ndarray | None = None  # (layers, heads, T, T) on the sentence (Transformer)
    head_stats: dict[str, np.ndarray] | None = None  # "entropy", "previous_token", "induction": (layers, heads)
    probes: dict[str, float] | None = None  # "agreement" / "copy" / "recall" accuracy, 0..1
    tokens_seen: int | None = None
    val_loss: float | None = None


def choose_sentence(valid: torch.Tensor, eos_id: int, limit: int | None = None) -> list[int]:
    """The ids of the first line of the validation stream with 12 to 24 tokens (at most `limit`);
    else the first tokens of the longest line, cut to 24 (or `limit`)."""
    low, high = SENTENCE_TOKENS
    high = min(high, limit or high)
    lines, line = [], []
    for i in valid[:200_000].tolist():
        if i == eos_id:
            if line:
                lines.append(line)
            line = []
        else:
            line.append(i)
    lines.append(line)
    for ids in lines:
        if min(low, high) <= len(ids) <= high:
            return ids
    return max(lines, key=len)[:high]


COPY_LENGTHS, RECALL_PAIRS = (1, 2, 4, 8, 12, 16, 20), (1, 2, 4, 6, 8, 10)


def probe_items(corpus: str, context: int | None = None) -> tuple[str, list[Any]]:
    """(probe name, test items) for the run's corpus ("" and [] when it has no probe); copy and
    recall items only of lengths that fit `context` after <eos>."""
    probe = PROBES.get(corpus, "")
    room = (context or 10**9) - 1
    if probe == "agreement":
        return probe, agreement_items(PROBE_ITEMS)
    if probe == "copy":
        return probe, sequence_items(copy_item, PROBE_ITEMS, tuple(n for n in COPY_LENGTHS if 2 * n + 1 <= room))
    if probe == "recall":
        return probe, sequence_items(recall_item, PROBE_ITEMS, tuple(n for n in RECALL_PAIRS if 4 * n + 1 <= room))
    return "", []


def probe_score(model: nn.Module, tokenizer: Any, corpus: str) -> dict[str, float]:
    """The probe accuracy (overall) that fits the run's corpus, or {} when none does."""
    probe, items = probe_items(corpus, getattr(model.config, "context_length", None))
    if not items:
        return {}
    try:
        score = agreement_accuracy if probe == "agreement" else copy_accuracy
        rows = score(model, tokenizer, items)
    except LabkitError:  # the vocabulary lacks the probe's words (a cut vocabulary)
        return {}
    return {probe: round(overall(rows), 4)}


def measure(model: nn.Module, tokenizer: Any, sentence: list[int], corpus: str) -> dict[str, Any]:
    """One snapshot of `model` as a timeline record (without its step): attention and head
    statistics of a Transformer, the probe score of a synthetic corpus."""
    record: dict[str, Any] = {}
    if getattr(model.config, "family", None) == "transformer" and sentence:
        with eval_mode(model), torch.inference_mode():
            _, cache = run_with_cache(model, torch.tensor([sentence], device=device_of(model)),
                                      names="blocks.*.attn.hook_pattern", compute_logits=False)
        # (L, H, T, T); float64: 0.123 stays 0.123 in JSON
        attention = cache.stack("attn.hook_pattern")[:, 0].double().cpu().numpy()
        special = {tokenizer.eos_id, tokenizer.unk_id, getattr(tokenizer, "pad_id", None)}
        pool = [i for i in range(model.config.vocab_size) if i not in special]
        length = min(INDUCTION["length"], len(pool), (model.config.context_length - 1) // 2)
        induction = induction_score(model, pool, length, batch=INDUCTION["batch"], prefix=[tokenizer.eos_id])
        rows = head_stats(attention, induction)
        L, H = attention.shape[:2]
        grid = {key: np.array([r[key] for r in rows]).reshape(L, H) for key in
                ("entropy", "previous_token_share", "induction_score")}
        record["attention"] = [[[np.round(row[:t + 1], DIGITS).tolist() for t, row in enumerate(head)]
                                for head in layer] for layer in attention]  # rows up to the diagonal
        record["head_stats"] = {"entropy": grid["entropy"].round(4).tolist(),
                                "previous_token": grid["previous_token_share"].round(4).tolist(),
                                "induction": grid["induction_score"].round(4).tolist()}
    probes = probe_score(model, tokenizer, corpus)
    if probes:
        record["probes"] = probes
    return record


def _attention(rows: Any, T: int) -> np.ndarray | None:
    """(L, H, T, T) from the stored rows up to the diagonal, or None if they do not fit T."""
    try:
        L, H = len(rows), len(rows[0])
        out = np.zeros((L, H, T, T), dtype=np.float32)
        for i in range(L):
            for j in range(H):
                if len(rows[i][j]) != T:
                    return None
                for t, row in enumerate(rows[i][j]):
                    out[i, j, t, :t + 1] = row
        return out
    except (TypeError, IndexError, ValueError):
        return None


def _grid(values: Any, shape: tuple[int, int] | None) -> np.ndarray | None:
    try:
        grid = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return None
    return grid if grid.ndim == 2 and (shape is None or grid.shape == shape) else None


def read_timeline(run_path: str | Path) -> list[Snapshot]:
    """The run's snapshots in step order (one per step: the last written wins). A missing file, a
    torn last line and lines that do not parse as snapshots are skipped, never raised."""
    records = read_timeline_records(run_path)
    header = next((r for r in reversed(records) if r.get("kind") == "sentence"), {})  # the last one written
    tokens = [str(t) for t in header.get("tokens", [])] if isinstance(header.get("tokens"), list) else []
    by_step: dict[int, Snapshot] = {}
    for r in records:
        step = r.get("step")
        if r.get("kind") != "snapshot" or not isinstance(step, int) or isinstance(step, bool):
            continue
        attention = _attention(r["attention"], len(tokens)) if "attention" in r else None
        shape = attention.shape[:2] if attention is not None else None
        stats = r.get("head_stats") if isinstance(r.get("head_stats"), dict) else {}
        grids = {k: g for k, v in stats.items() if (g := _grid(v, shape)) is not None}
        probes = r.get("probes") if isinstance(r.get("probes"), dict) else {}
        probes = {str(k): float(v) for k, v in probes.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        seen, loss = r.get("tokens_seen"), r.get("val_loss")
        by_step[step] = Snapshot(step, tokens, attention, grids or None, probes or None,
                                 seen if isinstance(seen, int) else None,
                                 float(loss) if isinstance(loss, (int, float)) and not isinstance(loss, bool) else None)
    return [by_step[s] for s in sorted(by_step)]


@dataclass(frozen=True)
class Rise:
    """The largest rise of one head statistic between two evaluations in a row."""

    layer: int
    head: int
    before: float
    after: float
    from_step: int
    to_step: int


MIN_RISE = 0.01  # less than this between two evaluations is no rise (a finding never calls 0.00 -> 0.00 one)


def largest_rise(snapshots: list[Snapshot], key: str) -> Rise | None:
    """Which head's `key` statistic ("induction", "previous_token", ...) rose most between two
    evaluations in a row, or None when none rose by MIN_RISE or more (or there are fewer than two)."""
    steps = [s for s in snapshots if s.head_stats and key in s.head_stats]
    if len(steps) < 2:
        return None
    rises = np.stack([b.head_stats[key] - a.head_stats[key] for a, b in zip(steps, steps[1:])])  # (N-1, L, H)
    if not np.isfinite(rises).any():
        return None
    i, layer, head = np.unravel_index(int(np.nanargmax(rises)), rises.shape)
    if not rises[i, layer, head] >= MIN_RISE:
        return None
    a, b = steps[i], steps[i + 1]
    return Rise(int(layer), int(head), float(a.head_stats[key][layer, head]), float(b.head_stats[key][layer, head]),
                a.step, b.step)
