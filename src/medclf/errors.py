"""The project's exception family.

Every error a user can cause is a :class:`MedclfError`; the CLI prints it as one paragraph and exits 2.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MedclfError", "ConfigError", "DataError", "ModelError", "RunFolderError"]


class MedclfError(Exception):
    """Base class of every error caused by user input (config, data, run folder)."""


class ConfigError(MedclfError, ValueError):
    """The configuration is invalid: names the field, the value and what would be accepted."""


class DataError(MedclfError, ValueError):
    """The data cannot be read or used. Carries the offending file, row or column when known."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class ModelError(MedclfError, ValueError):
    """A model or its weights cannot be built or found."""


class RunFolderError(MedclfError):
    """A run folder is missing, incomplete, or belongs to a different configuration."""
