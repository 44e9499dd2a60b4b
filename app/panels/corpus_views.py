"""The Compare page's views that read a corpus rather than one sentence: the loss by position in
the context window, perplexity by word frequency (each run's training counts), and subject-verb
agreement by distance on the synthetic grammar. Each takes the `Pair` of runs being compared."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import streamlit as st

from labkit.data.synthetic import agreement_items
from labkit.errors import LabkitError
from labkit.inspect import MAX_TOKENS, agreement_accuracy, loss_by_position, overall, perplexity_by_frequency, token_counts
from labkit.inspect.compare_plots import frequency_figure, position_loss_figure, probe_figure
from labkit.runs import LoadedRun, RunInfo

import common
from panels import corpus, share, ui

DISTANCES = (0, 2, 4, 6, 8, 10, 12)  # words between the subject and its verb
MAX_WINDOWS = 64  # windows read for the loss by position and frequency: enough for a smooth curve, fast on a CPU


@dataclass
class Pair:
    """The two runs of the Compare page, by name."""

    infos: dict[str, RunInfo]
    runs: dict[str, LoadedRun]
    transformer: dict[str, bool]

    @property
    def corpora(self) -> dict[str, str]:
        return {n: common.corpus(i) for n, i in self.infos.items()}

    def same_corpus(self) -> bool:
        return len(set(self.corpora.values())) == 1

    def key(self, name: str) -> tuple[str, tuple[int, int]]:
        """(path, weights stamp): what a run's cached measurements are keyed on."""
        return str(self.infos[name].path), common.stamp(self.infos[name])


# --- cached measurements (keyed on the run's path and weights stamp; `_run` is not hashed) ------
@st.cache_data(max_entries=16, show_spinner="Measuring the loss by position...")
def position_curve(_run, path: str, stamp: tuple[int, int], data: str, block: int) -> tuple[list[float], int]:
    """(loss by position, windows read) on the first MAX_WINDOWS windows of the validation text."""
    stream = _run.tokenizer.encode_lines(corpus.lines(data, "valid"))
    windows = min(MAX_WINDOWS, (stream.numel() - 1) // block)
    return loss_by_position(_run.model, stream, block, max_windows=MAX_WINDOWS).tolist(), windows


@st.cache_data(max_entries=16, show_spinner="Counting the training words and scoring each bucket...")
def frequency_table(_run, path: str, stamp: tuple[int, int], data: str, block: int) -> list[dict]:
    """`perplexity_by_frequency` on the validation text, the counts from the run's own training text."""
    tokenizer = _run.tokenizer
    train = tokenizer.encode_lines(corpus.lines(data, "train"))
    seen = json.loads(data).get("train_tokens")  # the part of the split the run was trained on
    counts = token_counts(train[:seen] if seen else train, tokenizer.vocab_size)
    stream = tokenizer.encode_lines(corpus.lines(data, "valid"))
    return perplexity_by_frequency(_run.model, stream, counts, block, max_windows=MAX_WINDOWS)


def knows(tokenizer) -> Callable[[str], bool]:
    """Whether the run's vocabulary has a word (it would not read as <unk>)."""
    return lambda word: tokenizer.unk_id is None or tokenizer.unk_id not in tokenizer.encode(word)


@st.cache_data(max_entries=16, show_spinner="Scoring agreement...")
def agreement_table(_run, path: str, stamp: tuple[int, int], per_distance: int) -> tuple[list[dict], str]:
    """Accuracy by distance on test sentences in the run's own words, and one of them as an example."""
    items = agreement_items(per_distance, DISTANCES, known=knows(_run.tokenizer))
    example = items[-1]
    return (agreement_accuracy(_run.model, _run.tokenizer, items),
            f"{example.prefix} [{example.correct} / {example.wrong}]")


def window_size(pair: Pair) -> int:
    """The longest window both runs were trained on and a Transformer can read."""
    sizes = []
    for n, info in pair.infos.items():
        config = info.config or {}
        sizes.append(int((config.get("train") or {}).get("seq_len") or MAX_TOKENS))
        if pair.transformer[n]:
            sizes.append(int(config["model"].get("context_length") or MAX_TOKENS))
    return max(2, min(sizes))


def needs_one_corpus(pair: Pair, what: str) -> bool:
    if pair.same_corpus():
        return False
    found = " and ".join(c or "?" for c in pair.corpora.values())
    st.info(f"{what} reads both runs on one corpus: pick two runs trained on the same corpus (here {found}).")
    return True


def position_section(pair: Pair) -> None:
    if needs_one_corpus(pair, "The loss by position"):
        return
    block, first = window_size(pair), next(iter(pair.infos.values()))
    data, name = corpus.data_key(first), common.corpus(first)
    curves, windows = {}, 0
    try:
        for n, r in pair.runs.items():
            curves[n], windows = position_curve(r, *pair.key(n), data, block)
    except (LabkitError, ValueError, TypeError, OSError) as e:
        st.error(f"Cannot read the validation text of {name or 'the corpus'}: {e}")
        return
    ui.chart(position_loss_figure(curves), "cmp_positions")
    late = slice(block // 2, block)
    falls = ", ".join(f"{n} by {c[0] - np.mean(c[late]):.2f} nats" for n, c in curves.items())
    best = min(curves, key=lambda n: np.mean(curves[n][late]))
    st.caption(f"{windows} windows of {block} tokens of the {name} validation text, each read from a fresh start (no "
               f"earlier text, no carried RNN state): position t has seen t tokens. From position 0 to the second half "
               f"of the window the loss falls: {falls}; {best} is lower there.")


def frequency_section(pair: Pair) -> None:
    if needs_one_corpus(pair, "Perplexity by word frequency"):
        return
    block, first = window_size(pair), next(iter(pair.infos.values()))
    tables = {}
    try:
        for n, r in pair.runs.items():
            tables[n] = frequency_table(r, *pair.key(n), corpus.data_key(first), block)
    except (LabkitError, ValueError, TypeError, OSError) as e:
        st.error(f"Cannot read the corpus {common.corpus(first) or ''}: {e}")
        return
    ui.chart(frequency_figure(tables), "cmp_frequency")
    seen = {n: [r for r in rows if r["low"] > 0] for n, rows in tables.items()}
    ends = "; ".join(f"{n}: {rows[0]['ppl']:,.1f} on the rarest seen words, {rows[-1]['ppl']:,.1f} on the most frequent"
                     for n, rows in seen.items() if rows)
    st.caption("The validation text's tokens grouped by how often each occurred in the run's training text "
               "(log-spaced buckets, each covering the same factor of counts; \"unseen\" first), and the perplexity "
               f"on each group (log axis). {ends}. Frequent words are easy for every model; rare ones show what a "
               "model learned from few examples.")
    ui.table([{"run": n, "training count": "unseen" if r["low"] == 0 else f"{r['low']:,}–{r['high'] - 1:,}",
               "tokens": r["tokens"], "types": r["types"], "loss (nats)": r["loss"], "perplexity": r["ppl"]}
              for n, rows in tables.items() for r in rows], "cmp_frequency_table",
             {"loss (nats)": "{:.3f}", "perplexity": "{:,.1f}"})


def agreement_section(pair: Pair) -> None:
    sizes = [10, 20, 50, 100, 200]
    per_distance = st.select_slider("Test sentences per distance", options=sizes, key="cmp_agreement_n",
                                    value=share.shared("sentences", "cmp_agreement_n", 20, share.choice(sizes)))
    tables, example = {}, ""
    for n, r in pair.runs.items():
        try:
            tables[n], example = agreement_table(r, *pair.key(n), per_distance)
        except LabkitError as e:
            st.warning(f"**{n}**: {e}")
    if not tables:
        return
    ui.chart(probe_figure(tables), "cmp_agreement")
    scores = ", ".join(f"{n} {overall(rows):.0%}" for n, rows in tables.items())
    st.caption(f"Test sentences of labkit's synthetic grammar, in the words each run knows, cut before the verb; every "
               f"noun between the subject and the verb has the other number, as in \"{common.md_escape(example)}\". A "
               f"run is right when it gives the agreeing verb the higher probability; chance is 50% (dashed). Overall: "
               f"{scores}. A run trained on other text meets these sentences as new text: its score says how much "
               "of English agreement it picked up.")
    ui.table([{"run": n, "distance": r["distance"], "sentences": r["count"], "accuracy": r["accuracy"],
               "margin (nats)": r["margin"]} for n, rows in tables.items() for r in rows], "cmp_agreement_table",
             {"accuracy": "{:.3f}", "margin (nats)": "{:.3f}"})
