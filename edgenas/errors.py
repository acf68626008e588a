"""User-facing errors.

Every error a user can cause (bad input, missing files, unreachable devices, infeasible budgets)
is raised as an :class:`EdgenasError` with a one-line message. The CLI prints the message and
exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgenasError(Exception):
    """An error caused by the user's input or environment; its message is one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class DataError(EdgenasError):
    """A dataset is missing, malformed or contains an unreadable file."""


class ConfigError(EdgenasError):
    """A configuration value or key is invalid."""


class InfeasibleBudget(EdgenasError):
    """A budget cannot be met by any spec in the search space."""

    exit_code = 3


class DeviceError(EdgenasError):
    """A device cannot be reached or cannot run an artifact."""

    exit_code = 4


class ExportError(EdgenasError):
    """An export failed or did not pass verification."""
