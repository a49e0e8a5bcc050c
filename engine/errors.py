"""User-facing errors.

Every error a user can cause (bad file, bad genome, bad configuration) is an
``EmonasError`` whose message is one line that names the file or value and the problem.
The CLI prints it and exits with code 2; the app shows it in a dialog.
"""

from __future__ import annotations

import os


class EmonasError(Exception):
    """Base class of errors caused by the user's input, reported without a traceback."""


class GenomeError(EmonasError, ValueError):
    """A genome outside the search space or malformed genome JSON."""


class ConfigError(EmonasError, ValueError):
    """An invalid configuration value (search config, plan override, CLI argument)."""


class DataError(EmonasError):
    """A problem with an input file or dataset; the message names the file."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class RunError(EmonasError):
    """A problem with a run directory (locked by another process, missing, wrong version)."""


class ExportError(EmonasError):
    """A model folder that cannot be written or that fails verification."""


def one_line(exc: BaseException) -> str:
    """The user-facing one-line text of an exception."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, EmonasError):
        return text or type(exc).__name__
    if isinstance(exc, MemoryError):
        return "out of memory"
    return f"unexpected {type(exc).__name__}: {text}" if text else f"unexpected {type(exc).__name__}"
