"""The project's exception family.

Every error a user can cause is a :class:`MedclfError`; the CLI prints it as one paragraph and exits 2.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MedclfError", "ConfigError", "ConfigWarning", "DataError", "ModelError", "RunFolderError", "StorageError"]


class MedclfError(Exception):
    """Base class of every error caused by user input (config, data, run folder)."""


class ConfigError(MedclfError, ValueError):
    """The configuration is invalid: names the field, the value and what would be accepted."""


class ConfigWarning(UserWarning):
    """A key the user wrote that the study will not use (the layout or mode ignores it); the run goes on.

    Raised with ``warnings.warn(message, ConfigWarning)`` at the config boundary; the CLI prints it as one
    ``warning:`` line. ``-W error::medclf.errors.ConfigWarning`` (or a test's filter) turns it into an error.
    """


class DataError(MedclfError, ValueError):
    """The data cannot be read or used. Carries the offending file, row or column when known."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class ModelError(MedclfError, ValueError):
    """A model or its weights cannot be built or found."""


class RunFolderError(MedclfError):
    """A run folder is missing, incomplete, or belongs to a different configuration."""


class StorageError(MedclfError, OSError):
    """A file or folder cannot be written: the disk is full, over quota, read-only or not permitted.

    Also an ``OSError`` (with its ``errno``), so code that tolerates a failed optional write (the decode cache)
    still does.
    """

    def __init__(self, message: str, *, path: str | Path, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = Path(path)
        self.errno = errno
        self.filename = str(path)

    def __str__(self) -> str:  # OSError's own str() would print "[Errno n] ..." instead of the message
        return str(self.args[0])
