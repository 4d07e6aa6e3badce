"""The tiny images every end-to-end test draws: a circle, a square or nothing on faint noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("circle", "square", "blank")


def _draw(kind: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    img = rng.integers(0, 40, (size, size), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    if kind == "circle":
        img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2] = 220
    elif kind == "square":
        img[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 200
    return img


def tiny_study(source: Path, cache: Path, *, name: str = "tiny", **sections: dict[str, Any]) -> dict[str, Any]:
    """The tiny study every end-to-end test runs: ``source`` a root/{train,test}/<class>/ tree, 16 px,
    ``test_resnet``, 2 epochs, 2 folds; ``sections`` update the sections they name (``training={"epochs": 1}``)."""
    config: dict[str, Any] = {
        "name": name, "seed": 0,
        "data": {"source": {"type": "splits", "path": str(source)}, "image_size": 16, "cache_dir": str(cache)},
        "model": {"name": "test_resnet"},
        "training": {"epochs": 2, "batch_size": 8, "device": "cpu"},
        "cv": {"n_folds": 2, "val_fraction": 0.25},
    }
    for key, value in sections.items():
        config[key] = config.get(key, {}) | value
    return config
