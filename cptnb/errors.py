"""Errors meant for people.

Every user-facing problem (a bad path, a malformed line, a model that cannot be
loaded offline) raises a :class:`CptnbError` subclass whose message says what
went wrong, where, and what to do about it. The CLI prints the message alone,
without a traceback, and so does a notebook (IPython's ``_render_traceback_`` hook).
"""

from __future__ import annotations


class CptnbError(Exception):
    """Base class for errors a user can fix; a notebook shows its message alone, as the CLI does."""

    def _render_traceback_(self) -> list[str]:  # IPython calls this instead of formatting the traceback
        return [f"{type(self).__name__}: {self}"]


class ConfigError(CptnbError, ValueError):
    """A configuration value is invalid; the message lists every problem found."""

    def __init__(self, problems: list[str], where: str = "config"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{where} has {len(self.problems)} problem(s):\n{lines}")


class DataError(CptnbError):
    """Input data is unreadable or malformed (names file, line and field)."""


class CorpusTooSmallError(DataError):
    """The prepared corpus fills no training block; the message says what survived and what to change."""


class ModelNotAvailableError(CptnbError):
    """A model cannot be found locally or downloaded (e.g. offline)."""


class TrainingDivergedError(CptnbError):
    """The training loss became NaN or infinite."""


class ExportError(CptnbError):
    """An export cannot proceed (missing inputs, unusable adapter) or its reload check failed."""


class OutOfMemoryError(CptnbError):
    """Training or evaluation ran out of GPU or CPU memory; the message lists settings that use less."""
