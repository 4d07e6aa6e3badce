"""The e2e tests' own fixture; the tiny data and session runs they share with other tests live in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tiny_data import CLASSES, _draw, tiny_study  # noqa: F401  (tests/reliability reads the image generator from here)


@pytest.fixture()
def tiny_config(tiny_splits: Path, tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_study(tiny_splits, tmp_path / "cache")))
    return path
