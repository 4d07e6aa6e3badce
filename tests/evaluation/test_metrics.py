import math

import numpy as np
import pytest

from medclf.evaluation.metrics import aggregate_folds, classification_metrics, confusion, higher_is_better


def test_perfect_and_known_binary_values():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    m = classification_metrics(y, probs, class_names=["neg", "pos"])
    assert m["accuracy"] == 1.0
    assert m["auc_macro"] == 1.0
    assert m["auc/pos"] == 1.0 and m["auc/neg"] == 1.0
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.7, 0.55])))


def test_multiclass_macro_values_match_hand_computation():
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.1, 0.6, 0.3]])
    m = classification_metrics(y, probs, class_names=["a", "b", "c"])
    # predictions 0, 0, 2, 1: class a p=1/2 r=1, b p=0 r=0, c p=1 r=1/2
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision_macro"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert m["recall_macro"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert m["balanced_accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert m["f1/a"] == pytest.approx(2 / 3)
    assert confusion(y, probs, n_classes=3) == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]


def test_auc_undefined_when_a_class_is_absent():
    y = np.array([0, 0, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    m = classification_metrics(y, probs, class_names=["a", "b", "c"])
    assert math.isnan(m["auc/c"]) and math.isnan(m["auc_macro"])
    assert m["auc/a"] == 1.0


def test_aggregate_folds_uses_sample_std_and_skips_nan():
    agg = aggregate_folds([{"accuracy": 0.8, "auc": math.nan}, {"accuracy": 0.9, "auc": 0.7}, {"accuracy": 1.0, "auc": 0.9}])
    assert agg["accuracy"]["mean"] == pytest.approx(0.9)
    assert agg["accuracy"]["std"] == pytest.approx(0.1)
    assert agg["accuracy"]["min"] == 0.8 and agg["accuracy"]["max"] == 1.0
    assert agg["auc"]["folds"] == [None, 0.7, 0.9]
    assert agg["auc"]["mean"] == pytest.approx(0.8)


def test_higher_is_better_is_false_for_every_loss_only():
    assert [higher_is_better(m) for m in ("loss", "hamming_loss", "val_loss", "train_loss")] == [False] * 4
    assert all(higher_is_better(m) for m in ("auc_macro", "accuracy", "exact_match", "f1/glossy", "auc/loss"))
