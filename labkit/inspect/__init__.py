"""Looking inside runs: attention capture and per-head statistics (induction scores too), attention
on long inputs, offline bertviz rendering, saliency for both families, per-token surprisal, loss by
context position and by word frequency, probe scores on the synthetic tasks, surgery (switching
heads, units and layers off), the logit lens, a run's timeline of snapshots, training curves,
run tables and config differences, plotly figures (`plots`, `compare_plots`, `inside_plots`) in
one house style (`style`).

The app, the notebooks and tests all call these; none of them holds this logic itself.
"""

from labkit.inspect.attention import (
    MAX_TOKENS,
    AttentionCapture,
    LongAttention,
    attention_change,
    capture_attention,
    head_stats,
    long_attention,
    sink_heads,
)
from labkit.inspect.context import (
    frequency_buckets,
    loss_by_position,
    perplexity_by_frequency,
    token_counts,
    window_losses,
)
from labkit.inspect.curves import X_AXES, RunCurves, ema, load_curves, run_curves
from labkit.inspect.heads import induction_score, induction_scores, repeated_sequences
from labkit.inspect.inputs import EmptyInput, clean_text
from labkit.inspect.lens import Lens, logit_lens
from labkit.inspect.probes import (
    agreement_accuracy,
    agreement_margins,
    copy_accuracy,
    in_vocabulary,
    overall,
    word_copy_items,
)
from labkit.inspect.run_tables import config_diff, flatten, summary_row
from labkit.inspect.running import language_model
from labkit.inspect.saliency import SaliencyMap, gradient_x_input, occlusion, saliency
from labkit.inspect.surgery import TokenEffect, ablate, head_importance, unit_importance
from labkit.inspect.surprisal import Surprisal, compare_surprisal, surprisal_html, token_surprisal
from labkit.inspect.timeline import Snapshot, read_timeline

__all__ = ["MAX_TOKENS", "X_AXES", "AttentionCapture", "EmptyInput", "Lens", "LongAttention", "RunCurves",
           "SaliencyMap", "Snapshot", "Surprisal", "TokenEffect", "ablate", "agreement_accuracy", "agreement_margins",
           "attention_change", "capture_attention", "clean_text", "compare_surprisal", "config_diff", "copy_accuracy",
           "ema", "flatten", "frequency_buckets", "gradient_x_input", "head_importance", "head_stats",
           "in_vocabulary", "induction_score", "induction_scores", "language_model", "load_curves", "logit_lens",
           "long_attention", "loss_by_position", "occlusion", "overall", "perplexity_by_frequency", "read_timeline",
           "repeated_sequences", "run_curves", "saliency", "sink_heads", "summary_row", "surprisal_html",
           "token_counts", "token_surprisal", "unit_importance", "window_losses", "word_copy_items"]
