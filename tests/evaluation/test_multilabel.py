"""Multi-label metrics, threshold tuning and co-occurrence."""

from __future__ import annotations

import math

import numpy as np
import pytest

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


def test_cooccurrence() -> None:
    assert cooccurrence(Y, ["a", "b"]) == {"a": {"a": 2, "b": 1}, "b": {"a": 1, "b": 2}}
