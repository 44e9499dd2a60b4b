"""A folder written whole or not at all: made under a temporary name beside its place, renamed into it."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from labkit.atomic import make_temporary_dir
from labkit.errors import LabkitError


@contextlib.contextmanager
def new_folder(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final` (which must not exist yet); when the block ends
    without an error it becomes `final`, otherwise it is removed. A reader never sees half of it,
    and a failure (a bad file, a full disk, Ctrl-C) leaves nothing behind."""
    if final.exists():
        raise LabkitError(f"{final} already exists: choose another name, or remove it first")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temporary_dir(final.parent, ".tmp-")
    except OSError as e:
        raise LabkitError(f"cannot write {final}: {e.strerror or e}") from None
    try:
        yield tmp
        if final.exists():  # made meanwhile by someone else: theirs stays
            raise LabkitError(f"{final} appeared while it was being written: nothing was changed")
        os.rename(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LabkitError(f"cannot write {final}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
