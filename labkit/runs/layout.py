"""The run directory: the one contract between whatever trains and whatever looks.

    runs/<name>/
      config.json        model, data and training configs: enough to rebuild everything
      tokenizer.json     the tokenizer / vocabulary
      model.safetensors  best weights (by validation loss): what viewers load
      checkpoints/step-00001200/{model.safetensors,state.pt}
                         the latest checkpoints for resume (weights + optimizer, schedule,
                         RNG and data position); each folder appears whole or not at all
      metrics.jsonl      one JSON record per logged step or evaluation
      card.json          the results card (and status: running, finished, interrupted, failed)
      timeline.jsonl     a small snapshot of the model at each evaluation (labkit.runs.timeline)

Weights are safetensors; the training state is plain tensors and numbers, loaded with
`torch.load(..., weights_only=True)`: nothing in a run directory can run code when loaded.

Every path labkit reads, writes or deletes in a run must stay inside it: a link that leads out
(metrics.jsonl to a file elsewhere, checkpoints/ to another folder) is refused, never followed.
Files are read only when they are regular files of a plausible size for their kind.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labkit.atomic import (
    MiB,
    make_temporary_dir,
    parse_json,
    read_bounded,
    write_atomic,
)
from labkit.errors import LabkitError, RunError
from labkit.runs.weights import load_state, load_weights, save_weights  # noqa: F401 (this package's names)

FORMAT_VERSION = 1
KEEP_CHECKPOINTS = 2
# The file names of a run: only this package spells them out.
CONFIG, TOKENIZER, WEIGHTS, METRICS, CARD = "config.json", "tokenizer.json", "model.safetensors", "metrics.jsonl", "card.json"
CHECKPOINTS, STATE = "checkpoints", "state.pt"
TIMELINE = "timeline.jsonl"  # snapshots at each evaluation: labkit.runs.timeline
ENTRIES = (CONFIG, TOKENIZER, WEIGHTS, METRICS, CARD, TIMELINE, CHECKPOINTS)  # what a run's folder holds
# The most a run's JSON files may hold: a config or card is a few KB; metrics grow with the run.
LIMITS = {CONFIG: MiB, CARD: MiB, METRICS: 512 * MiB}
NAME_MAX = 255  # bytes in a file name, on the common file systems
WHY = {errno.ENOSPC: "the disk is full (no space left on device)",
       errno.EDQUOT: "the disk quota is exceeded",
       errno.EROFS: "the file system is read-only",
       errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


def write_error(path: str | os.PathLike, error: OSError) -> RunError:
    """A failed write in a run directory as a one-line RunError: why, and what is still safe."""
    why = WHY.get(error.errno or 0, error.strerror or str(error))
    path = Path(path)
    root = next((p.parent for p in path.parents if p.name == CHECKPOINTS), path.parent)
    latest = (RunDir(root).checkpoints() or [None])[-1]
    then = (f"the last checkpoint, {latest.name}, is intact: fix that, then continue with "
            "--resume" if latest else "fix that and try again")
    return RunError(f"cannot write {path}: {why}; {then}")


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError (disk full, read-only, no permission) from the block into a RunError."""
    try:
        yield
    except OSError as e:
        raise write_error(path, e) from None


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    config_path = property(lambda self: self.root / CONFIG)
    tokenizer_path = property(lambda self: self.root / TOKENIZER)
    weights_path = property(lambda self: self.root / WEIGHTS)
    checkpoints_dir = property(lambda self: self.root / CHECKPOINTS)
    metrics_path = property(lambda self: self.root / METRICS)
    card_path = property(lambda self: self.root / CARD)

    @staticmethod
    def checkpoint_weights(checkpoint: Path) -> Path:
        return checkpoint / WEIGHTS

    @staticmethod
    def checkpoint_state(checkpoint: Path) -> Path:
        return checkpoint / STATE

    @property
    def name(self) -> str:
        return self.root.name

    def exists(self) -> bool:
        """Whether the folder holds a run: a config.json is there (whatever it is: a reader says if it is
        damaged, a FIFO or a link out of the run)."""
        return os.path.lexists(self.config_path)

    def check_new(self) -> None:
        """A RunError when the folder a new run is to go to holds files that are not a run's (a
        user's folder named by mistake): labkit would write beside them. Empty or absent is fine, and
        so is a run's own files without its config (another process creating the run right now: its
        lock says so)."""
        if self.exists() or not self.root.is_dir():
            return
        foreign = sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and p.name not in ENTRIES)
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise RunError(f"{self.root} is a folder that holds files of its own ({shown}) and no run: a new run "
                           "goes to a new (or empty) folder; choose another --name")

    def confined(self, path: Path) -> Path:
        """`path` with its links resolved; a RunError when that leads outside the run."""
        try:
            root, real = self.root.resolve(), path.resolve()
        except (OSError, RuntimeError) as e:  # a link that loops
            raise RunError(f"{path} cannot be resolved ({e}): remove the link") from None
        if real != root and root not in real.parents:
            raise RunError(f"{path} leads outside the run (to {real}): a run's files must be inside it; "
                           "replace the link with the file itself")
        return real

    def check_confined(self) -> None:
        """Refuse a run with a link that leads out of it, before anything writes to it."""
        entries = [self.root / name for name in ENTRIES]
        if self.checkpoints_dir.is_dir() and not self.checkpoints_dir.is_symlink():
            for folder in self.checkpoints_dir.iterdir():
                entries += [folder, folder / WEIGHTS, folder / STATE]
        for path in entries:
            if path.is_symlink():
                self.confined(path)

    # --- JSON files ---------------------------------------------------------------------
    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        with writing(path):
            write_atomic(self.confined(path), json.dumps(data, indent=2, sort_keys=True) + "\n")

    def read_json(self, path: Path) -> dict[str, Any]:
        try:
            self.confined(path)
            data = parse_json(read_bounded(path, LIMITS.get(path.name, MiB), path.name))
        except FileNotFoundError:
            raise RunError(f"{self.root} has no {path.name}: is it a labkit run directory?") from None
        except RunError:
            raise
        except LabkitError as e:
            raise RunError(str(e)) from None
        except ValueError as e:
            raise RunError(f"{path} is corrupt ({e}); delete the run or restore the file") from None
        if not isinstance(data, dict):
            raise RunError(f"{path} is corrupt (not a JSON object); delete the run or restore the file")
        return data

    def save_config(self, config: dict[str, Any]) -> None:
        self.write_json(self.config_path, {"format_version": FORMAT_VERSION, **config})

    def create(self, tokenizer: Any, config: dict[str, Any]) -> None:
        """Write a new run's tokenizer (an object with `save(path)`) and config into its folder.
        A failure (disk full, no permission) is a RunError; the writer's lock (labkit.runs.lock),
        which made the folder, removes what was written."""
        try:
            tokenizer.save(self.confined(self.tokenizer_path))
        except OSError as e:
            raise write_error(self.tokenizer_path, e) from None
        self.save_config(config)

    def load_config(self) -> dict[str, Any]:
        config = self.read_json(self.config_path)
        version = config.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise RunError(f"{self.config_path} is damaged: its format_version is {str(version)[:20]!r}, where labkit "
                           f"writes a whole number ({FORMAT_VERSION}); restore the file or delete the run")
        if version != FORMAT_VERSION:
            raise RunError(f"{self.root} was written in run format {version!r}; this labkit reads "
                           f"format {FORMAT_VERSION}: retrain it or use the matching labkit version")
        return config

    def write_card(self, card: dict[str, Any]) -> None:
        self.write_json(self.card_path, card)

    def read_card(self) -> dict[str, Any]:
        return self.read_json(self.card_path)

    # --- weights and checkpoints --------------------------------------------------------
    def save_best(self, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
        with writing(self.weights_path):
            save_weights(model, self.weights_path, metadata)

    def save_checkpoint(self, model: nn.Module, state: dict[str, Any], step: int) -> Path:
        """Write weights and state into a temporary folder, then rename it into place.

        A kill at any moment leaves the previous checkpoints whole: folders are only ever
        renamed into or out of their `step-N` names, and what a killed writer leaves behind
        (`.tmp-*`) is never listed and is removed by the next save. A failed write (disk full,
        read-only) is a RunError and leaves the previous checkpoint as it was."""
        final = self.checkpoints_dir / f"step-{step:08d}"
        tmp = None
        try:
            self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
            if self.checkpoints_dir.is_symlink():
                self.confined(self.checkpoints_dir)  # refused when it leads out of the run
            self.remove_stale_files()
            tmp = make_temporary_dir(self.checkpoints_dir, ".tmp-")
            save_weights(model, tmp / WEIGHTS, {"step": str(step)})
            buffer = io.BytesIO()  # torch.save reports a full disk as a RuntimeError: write it here
            torch.save(state, buffer)
            with open(tmp / STATE, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            if os.path.lexists(final):  # the same step saved again (e.g. at an interrupt right after)
                _remove_dir(final)
            os.replace(tmp, final)
        except OSError as e:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise write_error(final, e) from None
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self.checkpoints()[:-KEEP_CHECKPOINTS]:
            _remove_dir(old, ignore_errors=True)
        return final

    def remove_stale_files(self) -> None:
        """Remove what a writer killed mid-write left: `.tmp-*` folders, `.*.tmp` files. Links are
        removed, never followed; a checkpoints folder that is a link is left alone."""
        for folder in (self.root, self.checkpoints_dir):
            if folder.is_symlink():
                continue
            with contextlib.suppress(OSError):  # best effort: a read-only folder stays as it is
                for p in list(folder.iterdir()) if folder.is_dir() else []:
                    if p.name.startswith(".tmp-") and p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    elif p.name.startswith(".tmp-") or (p.name.startswith(".") and p.name.endswith(".tmp")):
                        p.unlink(missing_ok=True)

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first (temporary folders are not listed). A folder
        is complete when both its files are there: one is only ever renamed in whole."""
        if not self.checkpoints_dir.is_dir():
            return []
        steps = [p for p in self.checkpoints_dir.glob("step-*") if re.fullmatch(r"step-\d{1,18}", p.name)
                 and os.path.lexists(p / STATE) and os.path.lexists(p / WEIGHTS)]  # (step-zzz is not one)
        return sorted(steps, key=lambda p: int(p.name.removeprefix("step-")))

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint; a RunError when it, or a file in it, leads out of the run."""
        found = self.checkpoints()
        if not found:
            return None
        for path in (self.checkpoints_dir, found[-1], found[-1] / WEIGHTS, found[-1] / STATE):
            self.confined(path)
        return found[-1]


def _remove_dir(path: Path, ignore_errors: bool = False) -> None:
    """Rename a folder out of its `step-N` name, then delete it: never a half-deleted step-N.
    A link is removed itself, never what it points to."""
    aside = path.with_name(f".tmp-old-{path.name}")
    try:
        _remove(aside)  # left there by a writer killed while removing
        os.replace(path, aside)
        _remove(aside)
    except OSError:
        if not ignore_errors:
            raise


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def safe_run_path(root: str | Path, name: str) -> Path:
    """Resolve a run name under `root`, refusing anything that would escape it."""
    if (not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts
            or "/" in name or "\\" in name or not name.isprintable()):
        raise RunError(f"invalid run name {name[:60]!r}: use a plain name such as 'lstm-1'")
    if len(os.fsencode(name)) > NAME_MAX:
        raise RunError(f"invalid run name {name[:40]!r}...: it is {len(os.fsencode(name))} bytes long, "
                       f"more than the {NAME_MAX} a file name may have")
    try:
        root = Path(root).resolve()
        path = (root / name).resolve()
    except RuntimeError as e:  # (Python 3.11: "Symlink loop from ...")
        raise RunError(f"invalid run name {name!r}: {root / name} is a loop of links ({e})") from None
    if root not in path.parents:
        raise RunError(f"invalid run name {name!r}: it points outside {root}")
    return path
