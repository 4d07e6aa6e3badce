"""Tiny generated datasets for end-to-end runs of the real CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

CLASSES = ("circle", "square", "blank")


def _draw(kind: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    img = rng.integers(0, 40, (size, size), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    if kind == "circle":
        img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2] = 220
    elif kind == "square":
        img[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 200
    return img


@pytest.fixture(scope="session")
def tiny_splits(tmp_path_factory) -> Path:
    """root/{train,test}/<class>/*.png: 10 train and 4 test images per class, 16x16 grayscale."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 4)):
        for kind in CLASSES:
            folder = root / split / kind
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_draw(kind, rng)).save(folder / f"{kind}_{i}.png")
    (root / "train" / ".DS_Store").write_bytes(b"junk")
    return root


@pytest.fixture()
def tiny_config(tiny_splits: Path, tmp_path: Path) -> Path:
    cfg = {
        "name": "tiny",
        "seed": 0,
        "data": {"source": {"type": "splits", "path": str(tiny_splits)}, "image_size": 16,
                 "cache_dir": str(tmp_path / "cache")},
        "model": {"name": "test_resnet"},
        "training": {"epochs": 2, "batch_size": 8, "device": "cpu"},
        "cv": {"n_folds": 2, "val_fraction": 0.25},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
