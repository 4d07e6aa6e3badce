"""medclf: turn a folder of labelled medical images into a rigorous, reproducible classification study.

``medclf.run_study`` and ``medclf.StudyCallback`` (the Python API, :mod:`medclf.api`) are loaded on first use,
so ``import medclf`` and ``medclf --version`` stay light (no torch).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("medclf")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["StudyCallback", "__version__", "run_study"]

_API = ("run_study", "StudyCallback")


def __getattr__(name: str) -> Any:
    # importlib rather than an import statement: medclf.api sits at the top layer, and every layer imports
    # this package (for __version__), which must not make them all depend on it
    if name in _API:
        return getattr(importlib.import_module("medclf.api"), name)
    raise AttributeError(f"module 'medclf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
