"""The environment a study ran in, written to ``summary.json`` so the report shows the run's versions, not its own."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from medclf import __version__

__all__ = ["ENVIRONMENT_PACKAGES", "run_environment"]

ENVIRONMENT_PACKAGES = ("torch", "torchvision", "timm", "numpy", "scikit-learn")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def run_environment(runtime: Mapping[str, Any]) -> dict[str, str | None]:
    """Python, the platform, the versions of the packages a result depends on, medclf's, and the device.

    Args:
        runtime: the resolved runtime of a fold (``Runtime.describe()``: ``device``, ``device_name``...).

    Returns:
        ``{"python", "platform", "torch", "torchvision", "timm", "numpy", "scikit-learn", "medclf", "cuda",
        "device"}``; a package that is not installed is None, and so is ``cuda`` for a CPU-only torch.
    """
    import torch

    device, name = str(runtime.get("device", "")), runtime.get("device_name")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        **{package: _version(package) for package in ENVIRONMENT_PACKAGES},
        "medclf": __version__,
        "cuda": torch.version.cuda,
        "device": f"{device} ({name})" if name and name != device else device or None,
    }
