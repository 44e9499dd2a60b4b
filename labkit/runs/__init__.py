"""The run directory: the one contract between whatever trains and whatever looks.

`layout` (the files of a run, atomic writes, weights and training state), `metrics` (the
metrics file, appended while training runs), `load` (the list of runs, their status, loading
a model) and `lock` (one writer per run). Only this package knows a run's file names.
"""

from labkit.runs.layout import FORMAT_VERSION, RunDir, load_state, load_weights, safe_run_path, save_weights
from labkit.runs.load import (
    STALE,
    LoadedRun,
    RunInfo,
    has_weights,
    is_transformer,
    list_runs,
    load_run,
    model_label,
    pid_alive,
    read_info,
    run_kind,
    run_status,
    weights_stamp,
)
from labkit.runs.lock import remove_run, writer_lock
from labkit.runs.metrics import MetricsWriter, iter_metrics, read_metrics, run_metrics

__all__ = ["FORMAT_VERSION", "STALE", "LoadedRun", "MetricsWriter", "RunDir", "RunInfo", "has_weights",
           "is_transformer", "iter_metrics", "list_runs", "load_run", "load_state", "load_weights", "model_label",
           "pid_alive", "read_info", "read_metrics", "remove_run", "run_kind", "run_metrics", "run_status",
           "safe_run_path", "save_weights", "weights_stamp", "writer_lock"]
