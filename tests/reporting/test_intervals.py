"""The numpy metrics behind the ensemble bootstrap agree with medclf's metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medclf.evaluation.metrics import SUMMARY_METRICS, classification_metrics
from medclf.evaluation.multilabel import MULTILABEL_SUMMARY, multilabel_metrics
from medclf.evaluation.statistics import bootstrap_interval
from medclf.reporting.intervals import (
    FAST_METRICS,
    FAST_MULTILABEL_METRICS,
    ensemble_intervals,
    fast_metrics,
    fast_multilabel_metrics,
    fold_interval,
    in_unit_interval,
)
from medclf.reporting.rundata import Predictions


@pytest.mark.parametrize("k", [2, 3, 5])
def test_fast_metrics_equal_classification_metrics(k):
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 200)
    logits = rng.normal(size=(200, k)) + np.eye(k)[y] * 1.2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs[:3] = np.round(probs[:3], 1)  # ties
    ref = classification_metrics(y, probs, class_names=[str(i) for i in range(k)])
    fast = fast_metrics(y, probs)
    assert list(fast) == list(FAST_METRICS)
    for name in FAST_METRICS:
        assert fast[name] == pytest.approx(ref[name], abs=1e-12), name


def test_fast_metrics_with_a_missing_class_and_never_predicted_class():
    y = np.array([0, 0, 1, 1, 0])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.8, 0.1]])
    ref = classification_metrics(y, probs, class_names=["a", "b", "c"])
    fast = fast_metrics(y, probs)
    for name in FAST_METRICS:
        value = fast[name]
        assert (math.isnan(value) and math.isnan(ref[name])) or value == pytest.approx(ref[name]), name


def test_intervals():
    assert fold_interval([0.8, None, 0.9])[0] < 0.85 < fold_interval([0.8, None, 0.9])[1]
    assert fold_interval([0.8]) is None
    preds = Predictions(ids=[str(i) for i in range(60)], labels=["a", "b"] * 30,
                        probs=np.tile([[0.8, 0.2], [0.3, 0.7]], (30, 1)), predicted=["a", "b"] * 30)
    out = ensemble_intervals(preds, ["a", "b"], names=["accuracy", "auc_macro", "unknown"], n_resamples=200)
    assert set(out) == {"accuracy", "auc_macro"} and out["accuracy"] == (1.0, 1.0)


def _multilabel_case(seed: int, n: int = 120, k: int = 4, *, rare: bool = False):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, k)) < 0.35).astype(np.int64)
    if rare:
        truth[:, -1] = 0  # a label never present: its AUC is undefined and left out of the averages
        truth[: n // 3] = 0  # images with none of the labels: undefined per-image AUC
    probs = np.clip(truth * 0.4 + rng.random((n, k)) * 0.6, 0, 1)
    probs[:4] = np.round(probs[:4], 1)  # ties
    thresholds = rng.uniform(0.35, 0.65, k)
    return truth, probs, thresholds


@pytest.mark.parametrize(("seed", "rare"), [(0, False), (1, True), (2, False)])
def test_fast_multilabel_metrics_equal_multilabel_metrics(seed, rare):
    truth, probs, thresholds = _multilabel_case(seed, rare=rare)
    decided = (probs >= thresholds).astype(np.int64)
    ref = multilabel_metrics(truth, probs, class_names=list("abcd"), thresholds=thresholds)
    fast = fast_multilabel_metrics(np.hstack([truth, decided]), probs)
    assert sorted(fast) == sorted(FAST_MULTILABEL_METRICS)
    for name in MULTILABEL_SUMMARY:
        if name in fast:
            value = fast[name]
            assert (math.isnan(value) and math.isnan(ref[name])) or value == pytest.approx(ref[name], abs=1e-12), name


def test_every_summary_metric_has_a_fast_form():
    # without one, the ensemble's interval falls back to the evaluation function: a minute per report
    assert set(SUMMARY_METRICS) <= set(FAST_METRICS)
    assert set(MULTILABEL_SUMMARY) <= set(FAST_MULTILABEL_METRICS)


def test_multilabel_intervals_cover_every_summary_metric():
    truth, probs, thresholds = _multilabel_case(3, n=80)
    labels = ["|".join(c for c, t in zip("abcd", row) if t) for row in truth]
    predicted = ["|".join(c for c, p, t in zip("abcd", row, thresholds) if p >= t) for row in probs]
    preds = Predictions(ids=[str(i) for i in range(80)], labels=labels, probs=probs, predicted=predicted)
    out = ensemble_intervals(preds, list("abcd"), multilabel=True, n_resamples=200)
    ref = multilabel_metrics(truth, probs, class_names=list("abcd"), thresholds=thresholds)
    assert list(out) == list(MULTILABEL_SUMMARY)
    for name in ("auc_macro", "auc_micro", "loss", "f1_weighted", "f1_samples", "precision_macro", "recall_macro"):
        low, high = out[name]
        assert low <= ref[name] <= high, name


def test_a_metric_without_a_fast_form_falls_back_to_the_evaluation_function():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet([1, 1, 1], 60) + np.eye(3)[y]
    probs /= probs.sum(1, keepdims=True)
    preds = Predictions(ids=[str(i) for i in range(60)], labels=[str(v) for v in y], probs=probs,
                        predicted=[str(v) for v in probs.argmax(1)])
    out = ensemble_intervals(preds, ["0", "1", "2"], names=["accuracy", "f1/1", "no such metric"], n_resamples=20)
    assert set(out) == {"accuracy", "f1/1"}
    slow = bootstrap_interval(lambda a, b: classification_metrics(a, b, class_names=["0", "1", "2"])["f1/1"],
                              y, probs, n_resamples=20, seed=0)
    assert out["f1/1"] == pytest.approx(slow)  # the same resamples as bootstrap_interval's

    # multi-label: the thresholds that reproduce the predicted sets are recovered from them
    truth, mprobs, thresholds = _multilabel_case(5, n=50)
    labels = ["|".join(c for c, t in zip("abcd", row) if t) for row in truth]
    predicted = ["|".join(c for c, p, t in zip("abcd", row, thresholds) if p >= t) for row in mprobs]
    mpreds = Predictions(ids=[str(i) for i in range(50)], labels=labels, probs=mprobs, predicted=predicted)
    out = ensemble_intervals(mpreds, list("abcd"), multilabel=True, names=["f1/b", "f1_macro"], n_resamples=20)
    slow = bootstrap_interval(
        lambda a, b: multilabel_metrics(a, b, class_names=list("abcd"), thresholds=thresholds)["f1/b"],
        truth, mprobs, n_resamples=20, seed=0)
    assert out["f1/b"] == pytest.approx(slow)


def test_intervals_of_bounded_metrics_stay_within_0_and_1():
    spread = [0.9, 1.0, 1.0, 0.85, 1.0]
    assert fold_interval(spread)[1] > 1  # the plain t-interval
    low, high = fold_interval(spread, name="auc_macro")
    assert high == 1.0 and 0 < low < 0.95
    assert fold_interval([0.0, 0.1, 0.0], name="f1/square")[0] == 0.0
    assert fold_interval([1.2, 0.2, 0.1], name="loss")[0] < 0  # a loss is not bounded by 1; left as is
    assert in_unit_interval("hamming_loss") and in_unit_interval("precision_weighted") and not in_unit_interval("loss")
    assert not in_unit_interval("n_patients") and not in_unit_interval("support/a")
