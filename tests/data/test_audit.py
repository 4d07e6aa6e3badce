"""The leakage audit: planted exact and near duplicates, patient overlap, per-fold leaks and the policy."""

from __future__ import annotations

import numpy as np
import pytest

from medclf.data.audit import apply_leakage_policy, audit_dataset, perceptual_hashes
from medclf.data.dataset import ImageSet
from medclf.data.splitting import Fold
from medclf.errors import DataError


def _dataset(groups=None) -> ImageSet:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 1, 32, 32), dtype=np.uint8)
    images[9] = images[1]  # exact duplicate: train/1 planted in test
    images[10] = images[2]  # exact duplicate inside train (index 10 is moved to train below)
    images[11] = np.clip(images[3].astype(int) + 3, 0, 255).astype(np.uint8)  # near duplicate of train/3
    splits = np.array(["train"] * 8 + ["test"] * 4)
    splits[10] = "train"
    return ImageSet(images=images, labels=np.arange(12) % 2, ids=np.array([f"img{i}" for i in range(12)]),
                    splits=splits, class_names=["a", "b"], groups=groups)


def test_audit_finds_exact_duplicates_planted_across_train_and_test() -> None:
    report = audit_dataset(_dataset()).report
    exact = report["exact_duplicates"]
    assert exact["count"] == 2 and exact["across"] == 1 and exact["within"] == 1
    assert exact["groups"] == [["img1", "img9"], ["img2", "img10"]]
    near = report["near_duplicates"]
    assert near["count"] == 1 and near["across"] == 1 and near["groups"] == [["img3", "img11"]]
    assert near["pairs"][0][:2] == ["img3", "img11"]


def test_unrelated_images_are_not_near_duplicates() -> None:
    rng = np.random.default_rng(1)
    hashes = perceptual_hashes(rng.integers(0, 256, (50, 1, 32, 32), dtype=np.uint8))
    assert len(np.unique(hashes)) == 50


def test_patient_overlap_and_fold_leaks_and_policy() -> None:
    groups = np.array([f"p{i}" for i in range(12)])
    groups[8] = "p0"  # patient p0 in train and test
    data = _dataset(groups)
    train, test = np.arange(8), np.arange(8, 12)
    fold = Fold(0, train, np.array([], dtype=np.int64), np.array([], dtype=np.int64), test)
    result = audit_dataset(data, [fold])
    assert result.report["patient_overlap"]["count"] == 1
    assert result.report["patient_overlap"]["pairs"] == {"test|train": 1}
    assert result.report["folds"] == [{"fold": 0, "exact": 2, "near": 1, "patient": 1}]

    kept, lines = apply_leakage_policy(data, [fold], result, "warn")
    assert kept[0] is fold and "2 exact, 1 near, 1 patient" in lines[0]
    with pytest.raises(DataError, match="leakage audit found evaluation images"):
        apply_leakage_policy(data, [fold], result, "fail")
    dropped, _ = apply_leakage_policy(data, [fold], result, "drop_duplicates")
    assert dropped[0].test.tolist() == [8]  # 9 and 10 exact, 11 near: dropped; 8 only shares a patient
