"""A short real study on PneumoniaMNIST (skipped when ../shared/data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from medclf.cli import app
from real_data import REAL_NPZ as NPZ

pytestmark = pytest.mark.skipif(not NPZ.exists(), reason=f"real data not found at {NPZ}")


def test_small_model_on_a_subset_is_well_above_chance(tmp_path: Path):
    full = np.load(NPZ)
    rng = np.random.default_rng(0)
    subset = {}
    for split, n in (("train", 800), ("val", 200), ("test", 300)):
        idx = np.sort(rng.choice(len(full[f"{split}_labels"]), n, replace=False))
        subset[f"{split}_images"] = full[f"{split}_images"][idx]
        subset[f"{split}_labels"] = full[f"{split}_labels"][idx]
    np.savez(tmp_path / "subset.npz", **subset)
    cfg = {
        "name": "pneumonia-subset",
        "data": {"source": {"type": "npz", "path": "subset.npz", "class_names": ["normal", "pneumonia"]},
                 "image_size": 28},
        "model": {"name": "test_resnet"},
        "training": {"epochs": 3, "batch_size": 32, "device": "cpu"},
        "cv": {"mode": "holdout"},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data"]["counts"]["test"] == {"normal": int((subset["test_labels"] == 0).sum()),
                                                 "pneumonia": int((subset["test_labels"] == 1).sum())}
    assert summary["metrics"]["test"]["auc_macro"]["mean"] > 0.85
