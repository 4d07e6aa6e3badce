"""The e2e tests' own fixture; the tiny data and session runs they share with other tests live in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tiny_data import CLASSES, _draw  # noqa: F401  (tests/reliability reads the image generator from here)


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
