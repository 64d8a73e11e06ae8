"""User-facing errors.

Every error a user can cause (bad data, bad options, a file that is not a model) is raised as a
``SkinzooError``. The CLI prints it as one line (plus an optional hint) and exits with its
``exit_code``; anything else is a bug and shows a traceback only with ``--debug``.
"""

from __future__ import annotations


class SkinzooError(Exception):
    """Base class: ``message`` says what is wrong and where, ``hint`` what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(SkinzooError):
    """Options that contradict each other or name something that does not exist."""

    exit_code = 2


class DataError(SkinzooError):
    """The dataset cannot be used as it is (missing columns, unknown labels, empty classes...)."""

    exit_code = 3


class ModelError(SkinzooError):
    """A model name, weights file or model file that cannot be used."""

    exit_code = 4


class TrainingError(SkinzooError):
    """Training stopped for a reason the user must act on (NaN loss, resources)."""

    exit_code = 5


class ResourceError(SkinzooError):
    """An operation would need more memory/disk/devices than there are; says the estimate."""

    exit_code = 6
