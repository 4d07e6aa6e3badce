"""Confidence intervals for the report: t-intervals across folds, bootstrap intervals for the ensemble.

The bootstrap recomputes a metric on 1000 resamples of the ensemble's test images, so it needs metrics that
cost microseconds: the numpy forms below compute the same numbers as
:func:`medclf.evaluation.metrics.classification_metrics` (a test checks this) from a confusion matrix and
ranks, without scikit-learn's per-call validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from medclf.evaluation.statistics import bootstrap_interval, t_interval
from medclf.reporting.rundata import Predictions

__all__ = ["FAST_METRICS", "FAST_MULTILABEL_METRICS", "ensemble_intervals", "fold_interval"]

Metric = Callable[[np.ndarray, np.ndarray], float]


def fold_interval(values: Sequence[float | None]) -> tuple[float, float] | None:
    """95 % Student-t interval of the mean of per-fold values (None where undefined)."""
    return t_interval([math.nan if v is None else float(v) for v in values])


def _confusion(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    k = probs.shape[1]
    return np.bincount(y * k + probs.argmax(axis=1), minlength=k * k).reshape(k, k)


def _per_class(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tp, predicted, actual, f1) per class; precision, recall and F1 are 0 where undefined (as sklearn)."""
    cm = _confusion(y, probs)
    tp, predicted, actual = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    denominator = predicted + actual
    f1 = np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
    return tp, predicted, actual, f1


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(len(a)), where=b > 0)


def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney form of the ROC AUC (ties count one half); NaN with a single class."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positive == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auc_macro(y: np.ndarray, probs: np.ndarray) -> float:
    k = probs.shape[1]
    if k == 2:
        return _binary_auc((y == 1).astype(int), probs[:, 1])
    aucs = [_binary_auc((y == c).astype(int), probs[:, c]) for c in range(k)]
    return math.nan if any(math.isnan(a) for a in aucs) else float(np.mean(aucs))


def _loss(y: np.ndarray, probs: np.ndarray) -> float:
    clipped = np.clip(probs, 1e-7, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return float(-np.log(clipped[np.arange(len(y)), y]).mean())


def _balanced_accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    tp, _, actual, _ = _per_class(y, probs)
    present = actual > 0
    return float((tp[present] / actual[present]).mean())


FAST_METRICS: dict[str, Metric] = {
    "accuracy": lambda y, p: float((p.argmax(axis=1) == y).mean()),
    "balanced_accuracy": _balanced_accuracy,
    "precision_macro": lambda y, p: float(_ratio(*_per_class(y, p)[:2]).mean()),
    "recall_macro": lambda y, p: float(_ratio(_per_class(y, p)[0], _per_class(y, p)[2]).mean()),
    "f1_macro": lambda y, p: float(_per_class(y, p)[3].mean()),
    "auc_macro": _auc_macro,
    "loss": _loss,
}


# Multi-label: ``y`` packs the true and the predicted indicator side by side, (N, 2K), so that
# bootstrap_interval resamples both with the same rows; the thresholds behind ``predicted`` are the run's.
def _split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = y.shape[1] // 2
    return y[:, :k], y[:, k:]


def _ml_counts(y: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    truth, decided = _split(y)
    tp = (truth & decided).sum(axis=axis)
    return np.atleast_1d(tp), np.atleast_1d(decided.sum(axis=axis)), np.atleast_1d(truth.sum(axis=axis))


def _ml_f1(y: np.ndarray, axis: int | None) -> float:
    tp, predicted, actual = _ml_counts(y, axis)
    return float(_ratio(2 * tp, predicted + actual).mean())


FAST_MULTILABEL_METRICS: dict[str, Metric] = {
    "exact_match": lambda y, p: float((_split(y)[0] == _split(y)[1]).all(axis=1).mean()),
    "hamming_loss": lambda y, p: float((_split(y)[0] != _split(y)[1]).mean()),
    "f1_micro": lambda y, p: _ml_f1(y, None),
    "f1_macro": lambda y, p: _ml_f1(y, 0),
    "precision_micro": lambda y, p: float(_ratio(*_ml_counts(y, None)[:2])[0]),
    "recall_micro": lambda y, p: float(_ratio(_ml_counts(y, None)[0], _ml_counts(y, None)[2])[0]),
}


def ensemble_intervals(
    predictions: Predictions,
    classes: list[str],
    *,
    multilabel: bool = False,
    names: Sequence[str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, tuple[float, float] | None]:
    """95 % percentile-bootstrap intervals of the ensemble's test metrics, resampling images.

    Args:
        predictions: the ensemble's test predictions.
        classes: class (label) names in column order.
        multilabel: the labels are sets (``a|b``) and ``predicted`` holds the thresholded sets.
        names: metrics to compute (default: every metric with a fast form); others are left out.
        n_resamples: bootstrap resamples.
        seed: the resampling seed (the same run gives the same intervals).
    """
    table = FAST_MULTILABEL_METRICS if multilabel else FAST_METRICS
    if multilabel:
        y = np.hstack([predictions.truth(classes, multilabel=True), predictions.decisions(classes, multilabel=True)])
    else:
        y = predictions.y_index(classes)
    out: dict[str, tuple[float, float] | None] = {}
    for name in names if names is not None else table:
        if name in table:
            out[name] = bootstrap_interval(table[name], y, predictions.probs, n_resamples=n_resamples, seed=seed)
    return out
