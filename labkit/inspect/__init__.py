"""Looking inside runs: attention capture and per-head statistics, offline bertviz rendering,
training curves and their smoothing, run status and config differences, plotly figures.

The app, the notebooks and tests all call these; none of them holds this logic itself.
"""

from labkit.inspect.attention import (
    MAX_TOKENS,
    AttentionCapture,
    EmptyInput,
    capture_attention,
    clean_text,
    head_stats,
    sink_heads,
)
from labkit.inspect.curves import X_AXES, RunCurves, ema, load_curves, run_curves
from labkit.inspect.runs import config_diff, flatten, pid_alive, run_kind, run_status, summary_row

__all__ = ["MAX_TOKENS", "X_AXES", "AttentionCapture", "EmptyInput", "RunCurves", "capture_attention",
           "clean_text", "config_diff", "ema", "flatten", "head_stats", "load_curves", "pid_alive",
           "run_curves", "run_kind", "run_status", "sink_heads", "summary_row"]
