"""Exercises that check themselves, for the six notebooks.

In a notebook:

    from labkit.exercises import check, hint, solution
    check("01.perplexity", perplexity)   # ✓, a message that teaches, or "not done yet"
    hint("01.perplexity")                # printed only when asked
    solution("01.perplexity")

Each exercise is a function the student writes: its stub (signature, docstring, a body that raises
NotImplementedError), its reference solution, a hint, and a check that runs it on small cases
computed by hand or by labkit's own code on the same weights. One module per notebook or topic:

    data (01)  perplexity, vocab, bptt, bpe_merge
    rnn, sampling (02)  rnn_step, lstm_cell, tbptt, sampling
    attention, block (03)  attention, split_heads, merge_heads, block, kv_cache
    compare (04)  bigram, strided, surprisal
    finetune (05)  mean_pool, concat_pool, slanted
    heads (06)  prev_token, entropy, ablate_head

`cells(notebook)` gives each exercise's notebook cells; `labkit grade` runs students' notebooks and
collects what `check` recorded (labkit.exercises.grade).
"""

from labkit.exercises import attention, block, compare, data, finetune, heads, rnn, sampling  # noqa: F401 (they register)
from labkit.exercises.cells import ExerciseCells, cells, with_exercises
from labkit.exercises.core import EXERCISES, Exercise, Mistake, Result, check, evaluate, hint, names, solution

__all__ = ["EXERCISES", "Exercise", "ExerciseCells", "Mistake", "Result", "cells", "check", "evaluate", "hint",
           "names", "solution", "with_exercises"]
