"""What every page shares: the runs folder, the run list, cached model loading, small helpers.
Pages call labkit for everything else; nothing here knows about models."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from labkit.errors import LabkitError
from labkit.runs import LoadedRun, RunInfo, has_weights, list_runs, load_run, run_kind, run_status, weights_stamp

REFRESH_S = 2.0  # how often a page showing a live run re-reads it
ROOT_KEY = "runs_root"
GRAMMAR = ["the dogs near the old cat run quickly .", "the king that the small robots follow sings ."]
EXAMPLES = {  # sentences to start from, in the words of the corpus a run was trained on
    "synthetic": [GRAMMAR[0], "mia met leo at the river . mia gave leo a map . later leo smiled .", GRAMMAR[1]],
    "synthetic-agreement": GRAMMAR,
    "synthetic-copy": ["s4 s9 s1 s12 s7 | s4 s9 s1 s12 s7", "s20 s3 s15 | s20 s3 s15"],
    "synthetic-recall": ["k3 v7 k1 v2 k5 v0 | k1 v2 k5 v0 k3 v7"],
    "wikitext-2": ["The game was released in Japan in 2010 and sold well .",
                   "In 1890 , the city became the capital of the new state , and its population grew .",
                   "He was born in London and studied music at the university ."],
}


def sidebar() -> None:
    """The runs-folder picker, shown on every page (main.py calls it before the page)."""
    # Kept under a plain key too: Streamlit may drop a widget's own state when pages switch.
    value = st.session_state.setdefault(ROOT_KEY, os.environ.get("LABKIT_RUNS", "runs"))
    st.session_state[ROOT_KEY] = st.sidebar.text_input(
        "Runs folder", value=value, key="runs_root_input",
        help="Every folder in it is read as a run directory (relative paths are relative to where "
             "you started the app).")


def root() -> Path:
    return Path(str(st.session_state.get(ROOT_KEY) or "runs")).expanduser()


def runs() -> list[RunInfo]:
    """Every run under the runs folder, readable or not (an unreadable one carries its error)."""
    try:
        return list_runs(root())
    except OSError as e:  # the folder vanished or is not readable
        st.error(f"Cannot read the runs folder `{root()}`: {e.strerror or e}")
        return []


def lm_runs(infos: list[RunInfo]) -> list[RunInfo]:
    return [i for i in infos if not i.error and run_kind(i) == "lm" and isinstance((i.config or {}).get("model"), dict)]


def with_weights(infos: list[RunInfo]) -> list[RunInfo]:
    """Runs that have saved weights (a run writes them at its first evaluation)."""
    missing = [i.path.name for i in infos if not has_weights(i)]
    if missing:
        st.caption(f"No weights yet, not shown: {', '.join(missing)}.")
    return [i for i in infos if i.path.name not in missing]


def language_models(keep: Callable[[RunInfo], bool] = lambda info: True) -> tuple[list[RunInfo], list[RunInfo]]:
    """The language-model runs that `keep` accepts and that have weights, and every run read. The
    page is told (in captions) of the runs left out: no weights yet, or unreadable."""
    all_infos = runs()
    infos = with_weights([i for i in lm_runs(all_infos) if keep(i)])
    note_unreadable(all_infos)
    return infos, all_infos


def note_unreadable(infos: list[RunInfo]) -> None:
    bad = [i.path.name for i in infos if i.error]
    if bad:
        st.caption(f"Not shown, unreadable: {', '.join(bad)} (the Runs page says why).")


def active(infos: list[RunInfo]) -> bool:
    return any(run_status(i) == "running" for i in infos)


@st.cache_resource(max_entries=6, show_spinner="Loading the model...")
def _load(path: str, stamp: tuple[int, int]) -> LoadedRun:
    return load_run(path, which="best", device="cpu")


stamp = weights_stamp  # (mtime, size) of a run's weights: what cached results are keyed on


def load(info: RunInfo) -> LoadedRun | None:
    """The run's best model and tokenizer (cached until the weights file changes), or None with
    an error message on the page when it cannot be loaded."""
    try:
        return _load(str(info.path), stamp(info))
    except FileNotFoundError:
        st.error(f"**{info.path.name}** has no saved weights (yet): it may still be starting, or "
                 "it was deleted. Pick another run.")
    except LabkitError as e:
        st.error(f"**{info.path.name}** cannot be loaded: {e}")
    except Exception as e:  # a half-written or foreign file: say so, keep the page alive
        st.error(f"**{info.path.name}** cannot be loaded ({type(e).__name__}: {str(e)[:300]})")
    return None


def corpus(info: RunInfo) -> str:
    """The corpus a run was trained on ("wikitext-2", "synthetic", ...; "" when not recorded)."""
    return str(((info.config or {}).get("data") or {}).get("corpus", ""))


def examples(info: RunInfo) -> list[str]:
    """Example sentences in the words of the run's corpus (both kinds when it is another one)."""
    return EXAMPLES.get(corpus(info), EXAMPLES["wikitext-2"] + EXAMPLES["synthetic"])


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def md_escape(text: str) -> str:
    """Text shown literally in st.markdown (model output may hold any character)."""
    return _MD_SPECIAL.sub(r"\\\1", text)
