"""Multi-label metrics, threshold tuning and co-occurrence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from medclf.evaluation.multilabel import MULTILABEL_SUMMARY, cooccurrence, multilabel_metrics, tune_thresholds

Y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
P = np.array([[0.9, 0.2], [0.6, 0.4], [0.3, 0.45], [0.1, 0.1]])


def test_metrics_at_fixed_and_per_label_thresholds() -> None:
    m = multilabel_metrics(Y, P, class_names=["a", "b"])
    assert set(MULTILABEL_SUMMARY) <= set(m)
    assert m["exact_match"] == pytest.approx(0.5)  # rows 0 and 3 right; b is never predicted at 0.5
    assert m["hamming_loss"] == pytest.approx(2 / 8)
    assert m["recall/b"] == 0 and m["support/a"] == 2 and m["threshold/b"] == 0.5
    assert m["auc/a"] == 1.0 and not math.isnan(m["auc_micro"])
    t = tune_thresholds(Y, P)
    assert t.tolist() == [0.6, 0.4]
    tuned = multilabel_metrics(Y, P, class_names=["a", "b"], thresholds=t)
    assert tuned["exact_match"] == 1.0 and tuned["threshold/b"] == 0.4


AVERAGES = ("micro", "macro", "weighted", "samples")


def _random_task(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """60 images x 4 labels, every image with some but not all labels, probabilities with ties."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (60, 4))
    y[y.sum(axis=1) == 0, 0], y[y.sum(axis=1) == 4, 0] = 1, 0
    return y, np.round(rng.random((60, 4)), 1)


def test_every_average_of_precision_recall_f1_and_auc_matches_scikit_learn() -> None:
    y, p = _random_task()
    m = multilabel_metrics(y, p, class_names=list("abcd"), thresholds=0.5)
    for name in (f"{kind}_{avg}" for kind in ("precision", "recall", "f1", "auc") for avg in AVERAGES):
        assert name in MULTILABEL_SUMMARY
    pred = (p >= 0.5).astype(int)
    for avg in AVERAGES:
        prec, rec, f1, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        assert (m[f"precision_{avg}"], m[f"recall_{avg}"], m[f"f1_{avg}"]) == pytest.approx((prec, rec, f1))
        assert m[f"auc_{avg}"] == pytest.approx(roc_auc_score(y, p, average=avg))


def test_auc_averages_leave_out_labels_and_images_with_one_class() -> None:
    y, p = _random_task(1)
    y[:, 3] = 0  # label d never present: scikit-learn's macro, weighted and samples AUCs would raise
    y[0] = 0  # image 0 has no label: undefined for the samples average
    m = multilabel_metrics(y, p, class_names=list("abcd"))
    assert math.isnan(m["auc/d"])
    assert m["auc_macro"] == pytest.approx(roc_auc_score(y[:, :3], p[:, :3], average="macro"))
    assert m["auc_weighted"] == pytest.approx(roc_auc_score(y[:, :3], p[:, :3], average="weighted"))
    keep = (y.sum(axis=1) > 0) & (y.sum(axis=1) < 4)
    assert m["auc_samples"] == pytest.approx(roc_auc_score(y[keep], p[keep], average="samples"))
    assert m["auc_micro"] == pytest.approx(roc_auc_score(y.ravel(), p.ravel()))
    none = multilabel_metrics(np.zeros((3, 2), int), np.full((3, 2), 0.5), class_names=["a", "b"])
    assert all(math.isnan(none[f"auc_{avg}"]) for avg in AVERAGES)


def test_tuned_thresholds_never_cut_inside_tied_probabilities() -> None:
    # label a: a positive and a negative tie at 0.8. Cutting between them (top image only: F1 2/3) is no
    # threshold; the real ones give 0.8 -> F1 1/2, 0.3 -> 2/5, 0.2 -> 2/3 (everything predicted)
    y = np.array([[1, 1], [0, 0], [0, 1], [1, 0]])
    p = np.array([[0.8, 0.9], [0.8, 0.1], [0.3, 0.7], [0.2, 0.2]])
    t = tune_thresholds(y, p)
    m = multilabel_metrics(y, p, class_names=["a", "b"], thresholds=t)
    assert t.tolist() == [0.2, 0.7] and m["f1/a"] == pytest.approx(2 / 3) and m["f1/b"] == 1.0


def test_cooccurrence() -> None:
    assert cooccurrence(Y, ["a", "b"]) == {"a": {"a": 2, "b": 1}, "b": {"a": 1, "b": 2}}
