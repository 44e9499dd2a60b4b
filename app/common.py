"""What every page shares: the runs folder, the run list, cached model loading, small helpers.
Pages call labkit for everything else; nothing here knows about models.

One server holds a classroom: what is read from runs is shared by every session and kept while the
files it came from stay the same (keyed by run and the files' modification stamps), in caches of a
fixed size, so the server's memory does not grow with the number of sessions: the run list, the
models (`load`), and analyses of a model (`analysis`: twenty students on one run and one sentence
cost one computation). The weights are loaded once; each script run gets its own module tree over
them (labkit.models.own_modules), so the hooks one session puts on a model to read its attention
never fire in another's, and no session waits for another's page. Computations take a slot of
the server's cores (panels/gate.py); a session that has to wait is shown its place in the line.

The runs folder: with `labkit app --class` it is the server's, fixed (no folder box); otherwise the
folder box accepts folders under the one the app was started in, or under `--runs-dir`."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from labkit.errors import LabkitError
from labkit.inspect import quality
from labkit.models import own_modules
from labkit.runs import (
    LoadedRun,
    RunDir,
    RunInfo,
    has_weights,
    list_runs,
    load_run,
    run_kind,
    run_status,
    weights_stamp,
)

from panels.gate import computing

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


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def from_this_machine(address: str | None) -> bool:
    """Whether a connection's address is a loopback one (Streamlit gives None for 127.0.0.1 and ::1; a
    server listening on "::" sees IPv4 clients as ::ffff:127.0.0.1)."""
    if not isinstance(address, str):  # None, or no real connection (Streamlit's AppTest)
        return True
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    return (ip.ipv4_mapped or ip).is_loopback if isinstance(ip, ipaddress.IPv6Address) else ip.is_loopback


def serve_here_only() -> None:
    """Streamlit listens on every network interface when no address was given (`streamlit run
    app/main.py` from a folder without labkit's .streamlit/config.toml). labkit serves other machines
    only when asked (`labkit app --server.address 0.0.0.0`): until then a page requested from another
    machine is refused, and says how to ask."""
    from streamlit import config

    address = config.get_option("server.address")
    asked = config.get_where_defined("server.address") != config.ConfigOption.DEFAULT_DEFINITION
    if asked or (address and address in LOOPBACK):
        return
    if not from_this_machine(st.context.ip_address):
        st.error("This labkit server was started without an address, so it listens on every network interface, "
                 "but it serves this machine only: open it on the machine itself, or restart it with `labkit app` "
                 "(this machine only) or `labkit app --server.address 0.0.0.0` (a class on the network).")
        st.stop()


STARTED_IN = Path.cwd().resolve()  # the folder the app was started in


def class_mode() -> bool:
    """`labkit app --class`: one runs folder for everyone, the server's (no folder box)."""
    return os.environ.get("LABKIT_CLASS") == "1"


def default_root() -> Path:
    return Path(os.environ.get("LABKIT_RUNS") or "runs").expanduser()


def allowed_bases() -> list[Path]:
    """The folders a runs folder may lie under: the one the app was started in, and --runs-dir."""
    bases = [STARTED_IN]
    if os.environ.get("LABKIT_RUNS"):
        bases.append(Path(os.environ["LABKIT_RUNS"]).expanduser().resolve())
    return bases


def refusal(folder: str) -> str | None:
    """Why `folder` cannot be the runs folder (one line), or None when it can: it must lie under
    the folder the app was started in or under --runs-dir, after `..` and symbolic links are
    followed. (An app opened to a class must not list or write the server's other folders.)"""
    if not folder.strip():
        return "the runs folder is empty: type a folder"
    if "\x00" in folder:
        return "the runs folder has a NUL character in it"
    try:
        path = (STARTED_IN / Path(folder).expanduser()).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a name too long
        return f"`{folder}` cannot be read as a folder ({e})"
    if any(path == base or path.is_relative_to(base) for base in allowed_bases()):
        return None
    return (f"`{folder}` is outside the folder the app was started in ({STARTED_IN}); to open it, start "
            f"the app with `labkit app --runs-dir {folder}`")


def sidebar() -> None:
    """The runs-folder picker, shown on every page (main.py calls it before the page); in class
    mode the server's folder, fixed."""
    if class_mode():
        st.session_state[ROOT_KEY] = str(default_root())
        st.sidebar.caption(f"Runs: `{md_escape(str(default_root()))}` (class mode)")
        return
    # Kept under a plain key too: Streamlit may drop a widget's own state when pages switch.
    value = st.session_state.setdefault(ROOT_KEY, str(default_root()))
    typed = st.sidebar.text_input(
        "Runs folder", value=value, key="runs_root_input",
        help="Every folder in it is read as a run directory (relative paths are relative to where "
             "you started the app, and must stay under it or under --runs-dir).")
    problem = refusal(typed) if typed != value else None  # what the app or a test set is not checked
    if problem:
        st.sidebar.error(f"Not opened: {problem}. Still showing `{md_escape(value)}`.")
    else:
        st.session_state[ROOT_KEY] = typed


def root() -> Path:
    if class_mode():
        return default_root()
    return Path(str(st.session_state.get(ROOT_KEY) or default_root())).expanduser()


def runs() -> list[RunInfo]:
    """Every run under the runs folder, readable or not (an unreadable one carries its error); read
    again only when a run's config or card changed."""
    try:
        return _runs(str(root()), listing_stamp(root()))
    except OSError as e:  # the folder vanished or is not readable
        st.error(f"Cannot read the runs folder `{root()}`: {e.strerror or e}")
        return []


@st.cache_data(max_entries=32, show_spinner=False)
def _runs(path: str, stamp: tuple) -> list[RunInfo]:
    return list_runs(path)


def listing_stamp(folder: Path) -> tuple:
    """What the run list read from `folder` depends on: each run's config and card, by inode,
    modification time and size (a missing file counts too)."""
    if not folder.is_dir():
        return ()
    stamps = []
    for entry in sorted(folder.iterdir()):
        for path in (RunDir(entry).config_path, RunDir(entry).card_path):
            try:
                info = path.stat()
                stamps.append((entry.name, path.name, info.st_ino, info.st_mtime_ns, info.st_size))
            except OSError:  # missing, or not a folder at all
                stamps.append((entry.name, path.name))
    return tuple(stamps)


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


def language_models_or_stop() -> list[RunInfo]:
    """`language_models()`'s runs; with none, the page says how to make one and stops."""
    infos, _ = language_models()
    if not infos:
        st.info(f"No language-model runs in `{root()}` yet: train one (`labkit pretrain --preset tiny`) "
                "or use **Train demo models** on the Runs page.")
        st.stop()
    return infos


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


@st.cache_data(max_entries=64, show_spinner="Computing...")
def _analysis(name: str, path: str, weights: tuple[int, int], args: tuple, _fn: Callable[..., Any],
              _run: LoadedRun) -> Any:
    with computing():  # the session's own module tree over the shared weights, made only on a cache miss
        return _fn(dataclasses.replace(_run, model=own_modules(_run.model)), *args)


def analysis(fn: Callable[..., Any], info: RunInfo, *args: Any) -> Any:
    """`fn(loaded run, *args)` on the run's best model, computed once for every session and kept until
    the weights change (keyed by the run, its weights' stamp, `fn` and `args`, which must be hashable
    by Streamlit); None, with the message on the page, when the run cannot be loaded. What `fn`
    raises (an empty sentence, say) is raised here and not kept."""
    shared, problem = try_load(info, own=False)
    if problem:
        st.error(problem)
        return None
    return _analysis(f"{fn.__module__}.{fn.__qualname__}", str(info.path), stamp(info), args, _fn=fn, _run=shared)


def load(info: RunInfo) -> LoadedRun | None:
    """The run's best model and tokenizer (cached until the weights file changes), or None with
    an error message on the page when it cannot be loaded."""
    loaded, problem = try_load(info)
    if problem:
        st.error(problem)
    return loaded


def try_load(info: RunInfo, *, own: bool = True) -> tuple[LoadedRun | None, str | None]:
    """(the loaded run, None), or (None, why it cannot be loaded) for a page that keeps the message.
    The model is this script run's own module tree over the shared weights (`own_modules`); with
    `own=False` the shared one, which nothing may hook or change."""
    try:
        shared = _load(str(info.path), stamp(info))
        return (dataclasses.replace(shared, model=own_modules(shared.model)) if own else shared), None
    except FileNotFoundError:
        return None, (f"**{info.path.name}** has no saved weights (yet): it may still be starting, or "
                      "it was deleted. Pick another run.")
    except LabkitError as e:
        return None, f"**{info.path.name}** cannot be loaded: {e}"
    except Exception as e:  # a half-written or foreign file: say so, keep the page alive
        return None, f"**{info.path.name}** cannot be loaded ({type(e).__name__}: {str(e)[:300]})"


def quality_note(info: RunInfo) -> bool:
    """The run's quality warning (labkit.inspect.quality) on the page, when it has one; whether it had."""
    said = quality.warning(info, md_escape(info.path.name))
    if said:
        st.warning(said, icon=":material/warning:")
    return bool(said)


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
