"""Fixtures for the data tests: tiny images written with PIL into tmp_path, and a cache folder in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medclf.config import DataConfig
from medclf.data import cache


def gradient(height: int = 16, width: int = 16, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 test image, (H, W) or (H, W, C), different for each seed."""
    rng = np.random.default_rng(seed)
    base = np.add.outer(np.arange(height) * 7, np.arange(width) * 3) + rng.integers(0, 40)
    img = np.stack([(base + 50 * c) % 256 for c in range(channels)], axis=-1).astype(np.uint8)
    return img[..., 0] if channels == 1 else img


def write_image(path: Path, array: np.ndarray | None = None, *, seed: int = 0, **save_kwargs: Any) -> Path:
    """Save ``array`` (default: a 16x16 grayscale gradient) with PIL, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gradient(seed=seed) if array is None else array).save(path, **save_kwargs)
    return path


class ImageMaker:
    """The helpers above, handed to tests as the ``img`` fixture (tests never import conftest)."""

    gradient = staticmethod(gradient)
    write = staticmethod(write_image)


@pytest.fixture
def img() -> ImageMaker:
    """Write tiny test images: ``img.write(path, array)``, ``img.gradient(h, w, channels, seed)``."""
    return ImageMaker()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty default cache folder and zeroed cache counters."""
    folder = tmp_path / "default-cache"
    monkeypatch.setenv("MEDCLF_CACHE", str(folder))
    cache.STATS.reset()
    return folder


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DataConfig]:
    """Build a DataConfig: ``make_config({"type": "folder", "path": ...}, image_size=16, channels=1)``."""

    def build(source: dict[str, Any], **data: Any) -> DataConfig:
        raw = {"source": source, "image_size": 16, "channels": 1, "cache_dir": str(tmp_path / "cache"), **data}
        return DataConfig.model_validate(raw, context={"base_dir": None})

    return build


@pytest.fixture
def folder_tree(tmp_path: Path) -> Path:
    """root/<class>/...: 'cat' (2 images, one nested), 'dog' (2 images), plus hidden and non-image litter."""
    root = tmp_path / "folder"
    write_image(root / "cat" / "a.png", seed=1)
    write_image(root / "cat" / "nested" / "b.png", seed=2)
    write_image(root / "dog" / "c.png", seed=3)
    write_image(root / "dog" / "d.PNG", seed=4)
    write_image(root / "dog" / ".ipynb_checkpoints" / "e.png", seed=5)
    write_image(root / "dog" / ".hidden.png", seed=6)
    write_image(root / ".ipynb_checkpoints" / "ghost.png", seed=7)  # a hidden folder is not a class
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "cat" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root
