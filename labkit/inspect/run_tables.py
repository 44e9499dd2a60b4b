"""Runs as tables for viewers: a summary row per run, and the config fields that differ.
(Status, kind and loading are labkit.runs'.)"""

from __future__ import annotations

import math
from typing import Any

from labkit.runs import RunInfo, model_label, run_kind, run_status

NUMBERS = {"parameters": "parameters", "steps": "steps", "tokens seen": "tokens_seen", "best val ppl": "best_val_ppl",
           "test ppl": "test_ppl", "accuracy": "accuracy", "wall time (s)": "wall_clock_s",
           "training time (s)": "wall_time_s", "training FLOPs": "train_flops", "MFU": "mfu"}  # column -> card field


def _number(value: Any) -> float | int | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else None


def summary_row(info: RunInfo) -> dict[str, Any]:
    """One row of the runs table. A card field that should be a number and is not (a damaged card)
    is left blank and named in the row's problem; the other runs' rows are as usual."""
    card = info.card if isinstance(info.card, dict) else {}
    numbers = {column: _number(card.get(field)) for column, field in NUMBERS.items()}
    damaged = [field for column, field in NUMBERS.items() if card.get(field) is not None and numbers[column] is None
               and not (isinstance(card.get(field), float) and math.isnan(card[field]))]
    problem = info.error or (f"{info.run.card_path.name} is damaged: {', '.join(damaged)} not a number" if damaged
                             else "")
    return {"run": info.path.name, "kind": run_kind(info) if not info.error else "?",
            "model": model_label(info.config), "status": run_status(info), **numbers, "problem": problem}


def drop_empty_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows without the columns that are None or "" in every row."""
    keep = [k for k in (rows[0] if rows else {}) if any(r.get(k) not in (None, "") for r in rows)]
    return [{k: r.get(k) for k in keep} for r in rows]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"model": {"d_model": 64}} -> {"model.d_model": 64}; lists stay whole values."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def config_diff(configs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows `{"field": name, <run>: value, ...}` for the config fields whose values differ
    between the runs (a field missing from some runs differs too). Empty with fewer than two."""
    if len(configs) < 2:
        return []
    flat = {name: flatten(config) for name, config in configs.items()}
    fields = sorted(set().union(*(f.keys() for f in flat.values())))
    missing = object()
    rows = []
    for field in fields:
        values = [flat[name].get(field, missing) for name in flat]
        if all(_same(values[0], v) for v in values[1:]):
            continue
        rows.append({"field": field, **{name: _show(v, missing) for name, v in zip(flat, values)}})
    return rows


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _show(value: Any, missing: object) -> str:
    # One text column per run: a table column of mixed types would not display.
    if value is missing:
        return "(absent)"
    return "null" if value is None else str(value)
