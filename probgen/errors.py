"""Errors a user can act on.

Every error that reaches the command line as one clear message derives from
:class:`ProbgenError`; each also derives from the builtin exception a Python user would
expect (``ValueError`` for bad values, ``FileNotFoundError`` for missing files, ...), so
library code can catch either.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ProbgenError",
    "DataError",
    "DataNotFoundError",
    "ConfigError",
    "CheckpointError",
    "NotFittedError",
    "DivergedError",
    "RunLockedError",
    "DataChangedError",
    "WriteError",
    "suggest",
]


class ProbgenError(Exception):
    """Base class of the errors that the command line shows as one message."""

    def __str__(self) -> str:
        # Pyro re-raises an error from inside a model or guide as type(e)(f"{e}\n{shapes}"),
        # with the trace's shape table appended; our messages are whole without it (the
        # original error stays chained as __cause__ for --debug).
        text = super().__str__()
        cut = text.find("\nTrace Shapes:")
        return text if cut < 0 else text[:cut]


class DataError(ProbgenError, ValueError):
    """Data that cannot be used as given (unknown name, NaN values, wrong shape, ...)."""


class DataNotFoundError(ProbgenError, FileNotFoundError):
    """Files of a data set are missing where they were looked for."""


class ConfigError(ProbgenError, ValueError):
    """An option, a model name or a run folder that does not fit."""


class CheckpointError(ProbgenError, ValueError):
    """A checkpoint that is missing, truncated, from another model, or unsafe to load."""


class NotFittedError(ProbgenError, ValueError, AttributeError):
    """A method that needs a fitted estimator was called before ``fit``."""


class DivergedError(ProbgenError, FloatingPointError):
    """Training produced a NaN or infinite loss; the parameters were not updated with it."""


class RunLockedError(ConfigError):
    """Another process is writing into the run folder (it holds the folder's lock)."""


class DataChangedError(DataError):
    """The data behind a run differ from the data it was trained on."""


class WriteError(ProbgenError, OSError):
    """A file of a run could not be written (disk full, I/O error, read-only file system);
    the file it would have replaced is intact."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the nearest valid names, or ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
