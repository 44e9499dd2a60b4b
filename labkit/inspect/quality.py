"""Has a run learned anything? One check for every run, read from its card and config, so that
every viewer says the same thing where the run is shown (the app's pages, `labkit runs`).

A model that trained for a handful of steps still loads, draws attention maps and writes text:
without a check, noise would be shown as a finding. The checks are coarse on purpose; each one
names a model that *cannot* be showing what it learned:

- a language model whose validation perplexity is no better than the unigram model's (a table of
  word frequencies counted on the same training text, `unigram_val_ppl` on the card): it has
  learned no more than how common each word is;
- a classifier that gives every test sentence the same label, or whose accuracy is within
  `MAJORITY_MARGIN` of always answering the most common label;
- a run that a time budget stopped before half of the steps its recipe set (`stopped_by` on the
  card): on a slow or busy machine it trained far less than intended.

Only finished (or interrupted) runs are judged: a running one has not had its chance yet.
"""

from __future__ import annotations

import math
from typing import Any

from labkit.runs import RunInfo, run_kind, run_status

MAJORITY_MARGIN = 0.02  # accuracy this close to the majority class's share is no better than it
STEP_SHARE = 0.5  # a time budget that stopped a run before this share of its steps starved it
STEP_BOUND_MAX = 10**6  # max_steps at or above this means "until the time budget" (the laptop recipes)


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def lm_problems(card: dict[str, Any]) -> list[str]:
    ppl, unigram = _number(card.get("best_val_ppl")), _number(card.get("unigram_val_ppl"))
    if ppl is not None and unigram is not None and ppl >= unigram:
        return [f"its validation perplexity ({ppl:,.1f}) is no better than a unigram model's ({unigram:,.1f}, "
                "word frequencies counted on the same training text): it has not learned more than how common "
                "each word is, so what it shows is mostly noise"]
    return []


def classifier_problems(card: dict[str, Any]) -> list[str]:
    matrix = card.get("confusion_matrix")
    if not (isinstance(matrix, list) and matrix and all(isinstance(r, list) and len(r) == len(matrix) for r in matrix)):
        return []
    values = [[_number(x) for x in row] for row in matrix]
    if any(x is None or x < 0 for row in values for x in row):
        return []
    total = sum(sum(row) for row in values)
    if not total:
        return []
    labels = card.get("labels") if isinstance(card.get("labels"), list) else []
    names = [str(labels[i]) if i < len(labels) else str(i) for i in range(len(values))]
    predicted = [sum(row[j] for row in values) for j in range(len(values))]
    actual = [sum(row) for row in values]
    used = [j for j, n in enumerate(predicted) if n > 0]
    if len(used) == 1:
        return [f"it predicts **{names[used[0]]}** for every one of the {total:,.0f} test sentences: it has learned "
                "no more than one answer"]
    majority = max(range(len(actual)), key=actual.__getitem__)
    share, accuracy = actual[majority] / total, sum(values[i][i] for i in range(len(values))) / total
    if accuracy < share + MAJORITY_MARGIN:
        return [f"its test accuracy ({accuracy:.1%}) is within {MAJORITY_MARGIN:.0%} of always answering "
                f"**{names[majority]}** ({share:.1%}): it has learned next to nothing"]
    return []


def budget_problems(card: dict[str, Any], config: dict[str, Any] | None) -> list[str]:
    steps, planned = _number(card.get("steps")), _number(card.get("max_steps"))
    stopped_by = card.get("stopped_by")
    if stopped_by is None:  # cards written before stopped_by: a time budget and too few steps say as much
        budget = ((config or {}).get("train") or {}).get("time_budget_s")
        stopped_by = "time budget" if _number(budget) and steps is not None and planned and steps < planned else None
    if stopped_by != "time budget" or steps is None or not planned or planned >= STEP_BOUND_MAX:
        return []
    if steps < STEP_SHARE * planned:
        return [f"its time budget stopped it after {steps:,.0f} of the {planned:,.0f} steps its recipe set "
                "(a slow or busy machine): it trained far less than intended"]
    return []


def problems(info: RunInfo) -> list[str]:
    """Why `info`'s run has not learned what a viewer would show of it; empty when no check fails
    (or the run is still running, unreadable, or has no results yet)."""
    if info.error or not info.card or run_status(info) not in ("finished", "interrupted"):
        return []
    card = info.card
    found = budget_problems(card, info.config)
    kind = run_kind(info)
    if kind == "lm":
        found += lm_problems(card)
    elif kind == "classifier":
        found += classifier_problems(card)
    return found


def warning(info: RunInfo, name: str | None = None) -> str | None:
    """One sentence (markdown) naming the run (as `name`, say escaped, else its folder's name) and its
    problems, or None when it has none."""
    found = problems(info)
    if not found:
        return None
    return f"**{name or info.path.name}** has not learned enough to show much: " + "; and ".join(found) + "."
