"""Reading run directories for viewers: status, kind, a summary row, and config differences.

A run's card says "running" from its first step until it ends; if the process that wrote it was
killed (no chance to write "interrupted"), the card keeps saying "running". So a run counts as
running only while the card says so *and* its process is alive; otherwise it is shown as
"interrupted (stale)".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from labkit.rundir import RunInfo

STALE = "interrupted (stale)"


def pid_alive(pid: Any) -> bool:
    """Whether a process with this id exists (and, on Linux, is not a zombie)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return False
    if sys.platform.startswith("linux"):
        try:  # a finished child not yet reaped still answers kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            return state not in ("Z", "X")
        except (OSError, IndexError):
            return False
    return True


def run_status(info: RunInfo) -> str:
    """finished, running, interrupted, failed, interrupted (stale), incomplete or unreadable."""
    if info.error:
        return "unreadable"
    if not info.card:
        return "incomplete"  # config written, training not started (or the card was lost)
    status = str(info.card.get("status", "?"))
    if status == "running" and not pid_alive(info.card.get("pid")):
        return STALE
    return status


def run_kind(info: RunInfo) -> str:
    """"lm" (pretraining) or "classifier" (fine-tuning); older runs without a kind are LMs."""
    return str((info.config or {}).get("kind", "lm"))


def model_label(config: dict[str, Any] | None) -> str:
    """A short name for the model: lstm, gru, rnn_tanh, transformer, ..."""
    model = (config or {}).get("model") or {}
    if not isinstance(model, dict):
        return "?"
    if isinstance(model.get("body"), dict):  # a classifier: the language model it is built on
        return f"{model_label({'model': model['body']})} {model.get('family', 'classifier')}"
    return str(model.get("cell") or model.get("family") or "?")


def is_transformer(info: RunInfo) -> bool:
    model = (info.config or {}).get("model")
    return run_kind(info) == "lm" and isinstance(model, dict) and model.get("family") == "transformer"


def summary_row(info: RunInfo) -> dict[str, Any]:
    """One row of the runs table."""
    card = info.card or {}
    return {"run": info.path.name, "kind": run_kind(info) if not info.error else "?",
            "model": model_label(info.config), "status": run_status(info),
            "parameters": card.get("parameters"), "steps": card.get("steps"),
            "tokens seen": card.get("tokens_seen"), "best val ppl": card.get("best_val_ppl"),
            "test ppl": card.get("test_ppl"), "accuracy": card.get("accuracy"),
            "wall time (s)": card.get("wall_time_s"), "problem": info.error or ""}


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
