"""The linear_probe recipe end to end: a study whose head is a logistic regression, read back by predict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import medclf
from medclf.inference import predict_images
from medclf.runfolder import read_history
from medclf.training import feature_cache
from tiny_data import tiny_study


def test_a_linear_probe_study_writes_an_ordinary_run_folder_that_predict_reads(tiny_splits: Path, tmp_path: Path):
    config = tiny_study(tiny_splits, tmp_path / "cache", name="probe",
                        model={"name": "test_resnet", "pretrained": False},
                        training={"recipe": "linear_probe", "batch_size": 8, "device": "cpu"})
    out = tmp_path / "run"
    feature_cache.STATS.reset()
    with pytest.warns(medclf.errors.ConfigWarning, match="model.pretrained: false"):
        summary = medclf.run_study(config, out, report=False)
    assert (feature_cache.STATS.n_misses, feature_cache.STATS.n_hits) == (2, 0)  # a random backbone per fold
    for k in (0, 1):
        (row,) = read_history(out / f"fold-{k}" / "history.csv")  # one probe epoch per fold
        assert (row["epoch"], row["stage"], row["step"]) == (1, "0", 0) and math.isnan(row["lr"])  # no optimizer
        assert 0 < row["train_loss"] < math.log(3) and row["val_loss"] < math.log(3)
        metrics = json.loads((out / f"fold-{k}" / "metrics.json").read_text())
        assert metrics["best_epoch"] == 1
    assert summary["metrics"]["test"]["accuracy"]["mean"] > 0.5  # three classes: chance is a third
    square = sorted((tiny_splits / "test" / "square").glob("*.png"))[:3]
    rows = predict_images(out, square)
    assert [r["predicted"] for r in rows] == ["square"] * 3  # the probe's head, read back from the fold models


def test_a_second_probe_study_reads_every_folds_features_from_the_cache(tiny_splits: Path, tmp_path: Path):
    config = tiny_study(tiny_splits, tmp_path / "cache", name="probe",
                        model={"name": "test_resnet", "pretrained": False},
                        training={"recipe": "linear_probe", "batch_size": 8, "device": "cpu"})
    feature_cache.STATS.reset()
    with pytest.warns(medclf.errors.ConfigWarning):
        first = medclf.run_study(config, tmp_path / "one", report=False)
        second = medclf.run_study(config, tmp_path / "two", report=False)  # same seeds: the same backbones
    assert (feature_cache.STATS.n_misses, feature_cache.STATS.n_hits) == (2, 2)
    assert second["metrics"] == first["metrics"]  # the cached features give the same probes
