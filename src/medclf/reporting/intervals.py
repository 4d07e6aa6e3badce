"""Confidence intervals for the report: t-intervals across folds, bootstrap intervals for the ensemble.

The bootstrap rescores the ensemble's test images 1000 times, so it needs metrics that cost microseconds:
:func:`fast_metrics` and :func:`fast_multilabel_metrics` compute, in one pass per resample, the same numbers
as :func:`medclf.evaluation.metrics.classification_metrics` and
:func:`medclf.evaluation.multilabel.multilabel_metrics` (a test checks every name the evaluation lists) from
confusion counts and ranks, without scikit-learn's per-call validation. A metric without a fast form still
gets an interval, from the evaluation function itself (one call per resample: seconds, not milliseconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from medclf.evaluation.metrics import SUMMARY_METRICS, classification_metrics
from medclf.evaluation.multilabel import MULTILABEL_SUMMARY, multilabel_metrics
from medclf.evaluation.statistics import bootstrap_intervals, t_interval
from medclf.reporting.rundata import Predictions

__all__ = [
    "FAST_METRICS",
    "FAST_MULTILABEL_METRICS",
    "ensemble_intervals",
    "fast_metrics",
    "fast_multilabel_metrics",
    "fold_interval",
    "in_unit_interval",
]

# Metrics whose values lie in [0, 1] (any average, any class): their intervals are clipped to it.
_UNIT_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc", "exact_match", "hamming_loss",
                 "specificity", "sensitivity", "average_precision", "threshold")


def in_unit_interval(name: str) -> bool:
    """Whether metric ``name`` (``f1_macro``, ``auc/<class>``...) is bounded by 0 and 1; losses and counts are not."""
    base = name.split("/")[0]
    return any(base == m or base.startswith(f"{m}_") for m in _UNIT_METRICS)


def fold_interval(values: Sequence[float | None], *, name: str = "") -> tuple[float, float] | None:
    """95 % Student-t interval of the mean of per-fold values (None where undefined).

    For a metric bounded by [0, 1] (``name``, see :func:`in_unit_interval`) the interval is clipped to it: the
    t-interval is symmetric and runs past 1 for a mean near 1 with a few spread-out folds.
    """
    ci = t_interval([math.nan if v is None else float(v) for v in values])
    if ci is None or not in_unit_interval(name):
        return ci
    return (min(max(ci[0], 0.0), 1.0), min(max(ci[1], 0.0), 1.0))


# ---------------------------------------------------------------------------------------------- single-label
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
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros(a.shape), where=b > 0)


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


def fast_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The single-label summary metrics of (N,) class indices and (N, K) probabilities, in one pass."""
    tp, predicted, actual, f1 = _per_class(y, probs)
    present = actual > 0
    return {
        "accuracy": float(tp.sum() / len(y)),
        "balanced_accuracy": float((tp[present] / actual[present]).mean()),
        "precision_macro": float(_ratio(tp, predicted).mean()),
        "recall_macro": float(_ratio(tp, actual).mean()),
        "f1_macro": float(f1.mean()),
        "auc_macro": _auc_macro(y, probs),
        "loss": _loss(y, probs),
    }


FAST_METRICS = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro", "loss")


# ------------------------------------------------------------------------------------------------ multi-label
# ``y`` packs the true and the predicted indicator side by side, (N, 2K), so that bootstrap_interval
# resamples both with the same rows; the thresholds behind ``predicted`` are the run's.
def _split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = y.shape[1] // 2
    return y[:, :k], y[:, k:]


def _rank_auc(truth: np.ndarray, probs: np.ndarray, axis: int) -> np.ndarray:
    """The Mann-Whitney AUC of each column (axis 0) or row (axis 1); NaN where one class is missing."""
    n_pos = truth.sum(axis=axis).astype(np.float64)
    n_neg = truth.shape[axis] - n_pos
    u = (rankdata(probs, axis=axis) * truth).sum(axis=axis) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def _mean_defined(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The (weighted) mean of the defined values; NaN when none is (multilabel_metrics' AUC averages)."""
    defined = ~np.isnan(values)
    if not defined.any():
        return math.nan
    return float(np.average(values[defined], weights=None if weights is None else weights[defined]))


def fast_multilabel_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The multi-label summary metrics of packed ``y`` (truth | decisions) and (N, K) probabilities, in one pass.

    Precision, recall and F1 as scikit-learn's with ``zero_division=0``; AUC averages as multilabel_metrics
    (labels or images with one class left out); the loss is the mean binary cross-entropy, clipped at 1e-7.
    """
    truth, decided = _split(y)
    out = {
        "exact_match": float((truth == decided).all(axis=1).mean()),
        "hamming_loss": float((truth != decided).mean()),
    }
    both = truth & decided
    for average, axis in (("micro", None), ("macro", 0), ("weighted", 0), ("samples", 1)):
        tp, predicted, actual = both.sum(axis=axis), decided.sum(axis=axis), truth.sum(axis=axis)
        values = {"precision": _ratio(tp, predicted), "recall": _ratio(tp, actual),
                  "f1": _ratio(2 * tp, predicted + actual)}
        for kind, value in values.items():
            if average == "weighted":
                total = actual.sum()
                out[f"{kind}_{average}"] = float((value * actual).sum() / total) if total else 0.0
            else:
                out[f"{kind}_{average}"] = float(np.mean(value))
    per_label = _rank_auc(truth, probs, axis=0)
    out["auc_micro"] = _binary_auc(truth.ravel(), probs.ravel())
    out["auc_macro"] = _mean_defined(per_label)
    out["auc_weighted"] = _mean_defined(per_label, truth.sum(axis=0))  # a defined label has positives
    out["auc_samples"] = _mean_defined(_rank_auc(truth, probs, axis=1))
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    out["loss"] = float(-(truth * np.log(p) + (1 - truth) * np.log(1 - p)).mean())
    return out


FAST_MULTILABEL_METRICS = (
    "exact_match", "hamming_loss",
    *(f"{kind}_{average}" for average in ("micro", "macro", "weighted", "samples")
      for kind in ("precision", "recall", "f1")),
    "auc_micro", "auc_macro", "auc_weighted", "auc_samples", "loss",
)


# ----------------------------------------------------------------------------------------- the slow fallback
def _decision_thresholds(probs: np.ndarray, decided: np.ndarray) -> np.ndarray | None:
    """Per label, a threshold that reproduces the thresholded ``decided`` sets (None when none does)."""
    big = np.where(decided == 1, probs, np.inf).min(axis=0)
    thresholds = np.where(np.isfinite(big), big, np.nextafter(probs.max(axis=0), np.inf))
    return thresholds if np.array_equal((probs >= thresholds).astype(decided.dtype), decided) else None


def _evaluation_function(
    predictions: Predictions, classes: list[str], multilabel: bool
) -> Callable[[np.ndarray, np.ndarray], dict[str, float]] | None:
    """The evaluation's own metrics as a function of the bootstrap's (y, probs), or None when impossible."""
    if not multilabel:
        return lambda y, p: classification_metrics(y, p, class_names=classes)
    decided = predictions.decisions(classes, multilabel=True)
    thresholds = _decision_thresholds(predictions.probs, decided)
    if thresholds is None:
        return None
    return lambda y, p: multilabel_metrics(_split(y)[0], p, class_names=classes, thresholds=thresholds)


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

    Each resample is scored once for every metric (the fast forms share their counts and ranks); the
    resamples are bootstrap_interval's (one rule: bootstrap_intervals), so each interval is the one it would give.

    Args:
        predictions: the ensemble's test predictions.
        classes: class (label) names in column order.
        multilabel: the labels are sets (``a|b``) and ``predicted`` holds the thresholded sets.
        names: metrics to compute (default: the evaluation's summary metrics, ``SUMMARY_METRICS`` or
            ``MULTILABEL_SUMMARY``); a name the evaluation function does not return is left out.
        n_resamples: bootstrap resamples.
        seed: the resampling seed (the same run gives the same intervals).
    """
    fast = fast_multilabel_metrics if multilabel else fast_metrics
    fast_names = FAST_MULTILABEL_METRICS if multilabel else FAST_METRICS
    names = list(names if names is not None else MULTILABEL_SUMMARY if multilabel else SUMMARY_METRICS)
    if multilabel:
        y = np.hstack([predictions.truth(classes, multilabel=True), predictions.decisions(classes, multilabel=True)])
    else:
        y = predictions.y_index(classes)
    if not len(y):
        return {}
    slow = [name for name in names if name not in fast_names]
    evaluate = _evaluation_function(predictions, classes, multilabel) if slow else None
    slow = [name for name in slow if evaluate is not None and name in evaluate(y, predictions.probs)]

    def score(y_: np.ndarray, probs_: np.ndarray) -> dict[str, float]:
        out = fast(y_, probs_)
        if slow:  # seconds per report: each resample runs the evaluation function too
            out |= {name: value for name, value in evaluate(y_, probs_).items() if name in slow}
        return out

    kept = [name for name in names if name in fast_names or name in slow]
    return bootstrap_intervals(score, kept, y, predictions.probs, n_resamples=n_resamples, seed=seed)
