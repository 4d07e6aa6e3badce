"""The numpy metrics behind the ensemble bootstrap agree with medclf's metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medclf.evaluation.metrics import classification_metrics
from medclf.reporting.intervals import FAST_METRICS, ensemble_intervals, fold_interval
from medclf.reporting.rundata import Predictions


@pytest.mark.parametrize("k", [2, 3, 5])
def test_fast_metrics_equal_classification_metrics(k):
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 200)
    logits = rng.normal(size=(200, k)) + np.eye(k)[y] * 1.2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs[:3] = np.round(probs[:3], 1)  # ties
    ref = classification_metrics(y, probs, class_names=[str(i) for i in range(k)])
    for name, fn in FAST_METRICS.items():
        assert fn(y, probs) == pytest.approx(ref[name], abs=1e-12), name


def test_fast_metrics_with_a_missing_class_and_never_predicted_class():
    y = np.array([0, 0, 1, 1, 0])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.8, 0.1]])
    ref = classification_metrics(y, probs, class_names=["a", "b", "c"])
    for name, fn in FAST_METRICS.items():
        value = fn(y, probs)
        assert (math.isnan(value) and math.isnan(ref[name])) or value == pytest.approx(ref[name]), name


def test_intervals():
    assert fold_interval([0.8, None, 0.9])[0] < 0.85 < fold_interval([0.8, None, 0.9])[1]
    assert fold_interval([0.8]) is None
    preds = Predictions(ids=[str(i) for i in range(60)], labels=["a", "b"] * 30,
                        probs=np.tile([[0.8, 0.2], [0.3, 0.7]], (30, 1)), predicted=["a", "b"] * 30)
    out = ensemble_intervals(preds, ["a", "b"], names=["accuracy", "auc_macro", "unknown"], n_resamples=200)
    assert set(out) == {"accuracy", "auc_macro"} and out["accuracy"] == (1.0, 1.0)
