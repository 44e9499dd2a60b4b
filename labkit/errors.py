"""User-facing errors.

A `LabkitError` is a mistake the user can fix (missing data, a bad flag, a run directory that
is not one). The CLI prints its message on one line and exits non-zero, without a traceback;
anything else is a bug and keeps its traceback.
"""


class LabkitError(Exception):
    """A problem the user can fix; the message says what to do."""


class DataNotFoundError(LabkitError):
    """A corpus file is neither on disk nor downloadable."""


class ChecksumError(LabkitError):
    """A downloaded or located file does not match its pinned sha256."""


class RunError(LabkitError):
    """A run directory is missing, incomplete, corrupt or does not match its config."""
