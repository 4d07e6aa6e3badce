"""The tiny images every end-to-end test draws: a circle, a square or nothing on faint noise."""

from __future__ import annotations

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
