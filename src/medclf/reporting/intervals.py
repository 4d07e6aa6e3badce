"""Confidence intervals for the report: t-intervals across folds, bootstrap intervals for the ensemble.

The bootstrap rescores the ensemble's test images 1000 times with the fast metrics of
:mod:`medclf.evaluation.fast_metrics` (the same numbers as the evaluation's, from confusion counts and ranks;
the run writes its own intervals with them too). A metric without a fast form still gets an interval, from the
evaluation function itself (one call per resample: seconds, not milliseconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from medclf.evaluation.fast_metrics import (
    FAST_METRICS,
    FAST_MULTILABEL_METRICS,
    fast_metrics,
    fast_multilabel_metrics,
    metric_intervals,
    pack_multilabel,
)
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
    return lambda y, p: multilabel_metrics(y[:, : y.shape[1] // 2], p, class_names=classes, thresholds=thresholds)


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
        truth, decided = predictions.truth(classes, multilabel=True), predictions.decisions(classes, multilabel=True)
        y = pack_multilabel(truth, decided)
    else:
        y = predictions.y_index(classes)
    if not len(y):
        return {}
    slow = [name for name in names if name not in fast_names]
    if not multilabel and not slow:  # every resample scored at once (the same resamples, the same numbers)
        found = metric_intervals(y, predictions.probs, names=names, n_resamples=n_resamples, seed=seed)
        return {name: None if ci is None else (ci[0], ci[1]) for name, ci in found.items()}
    evaluate = _evaluation_function(predictions, classes, multilabel) if slow else None
    slow = [name for name in slow if evaluate is not None and name in evaluate(y, predictions.probs)]

    def score(y_: np.ndarray, probs_: np.ndarray) -> dict[str, float]:
        out = fast(y_, probs_)
        if slow:  # seconds per report: each resample runs the evaluation function too
            out |= {name: value for name, value in evaluate(y_, probs_).items() if name in slow}
        return out

    kept = [name for name in names if name in fast_names or name in slow]
    return bootstrap_intervals(score, kept, y, predictions.probs, n_resamples=n_resamples, seed=seed)
