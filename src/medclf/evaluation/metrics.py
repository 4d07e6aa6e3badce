"""Classification metrics: pure functions of labels and probabilities (scikit-learn does the arithmetic).

Metric names are part of the run-folder contract (``docs/outputs.md``): ``accuracy``, ``balanced_accuracy``,
``precision_macro``, ``recall_macro``, ``f1_macro``, ``auc_macro``, ``loss``, and per class
``precision/<class>``, ``recall/<class>``, ``f1/<class>``, ``auc/<class>``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = [
    "MONITORABLE",
    "SUMMARY_METRICS",
    "aggregate_folds",
    "classification_metrics",
    "confusion",
    "decide",
    "higher_is_better",
]

# The headline metrics: summarised across folds and selectable as the monitored validation metric.
SUMMARY_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "auc_macro",
    "loss",
)
MONITORABLE = SUMMARY_METRICS


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better: False for losses (``loss``, ``hamming_loss``, ``val_loss``).

    The one place that knows a metric's direction; ranking, verdicts and searches all ask it.
    """
    return not (metric == "loss" or metric.endswith("_loss"))


def decide(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Each row's predicted class index: the most probable class, or for two classes with a ``threshold`` the
    positive class (index 1) where its probability reaches the threshold (``evaluation.threshold``)."""
    probs = np.asarray(probs)
    if threshold is not None and probs.ndim == 2 and probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return probs.argmax(axis=1)


def _auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of one binary problem; NaN when only one class is present (AUC is undefined)."""
    if len(np.unique(y_true)) < 2:
        return math.nan
    return float(roc_auc_score(y_true, scores))


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, *, class_names: Sequence[str], threshold: float | None = None
) -> dict[str, float]:
    """Every image-level metric of a single-label classifier.

    Args:
        y_true: (N,) true class indices.
        probs: (N, K) class probabilities (rows sum to 1).
        class_names: the K class names, used for the per-class keys.
        threshold: two classes: the positive class's decision threshold (None: the most probable class).

    Returns:
        A flat dict of metric name to value; AUCs are NaN where undefined (a class absent from ``y_true``).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(class_names)
    labels = np.arange(n_classes)
    y_pred = decide(probs, threshold)
    with warnings.catch_warnings():
        # precision of a class never predicted is 0 by convention; sklearn warns about it every time
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        prec, rec, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=None, zero_division=0
        )
        balanced = balanced_accuracy_score(y_true, y_pred) if len(y_true) else math.nan
    out: dict[str, float] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        "precision_macro": float(prec.mean()),
        "recall_macro": float(rec.mean()),
        "f1_macro": float(f1.mean()),
    }
    class_aucs = [_auc((y_true == k).astype(int), probs[:, k]) for k in labels]
    if n_classes == 2:
        out["auc_macro"] = _auc(y_true, probs[:, 1])
    else:
        defined = [a for a in class_aucs if not math.isnan(a)]
        out["auc_macro"] = float(np.mean(defined)) if len(defined) == n_classes else math.nan
    clipped = np.clip(probs, 1e-7, 1.0)  # a confident mistake costs log(1e7), not infinity
    out["loss"] = float(log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=labels))
    for k, name in enumerate(class_names):
        out[f"precision/{name}"] = float(prec[k])
        out[f"recall/{name}"] = float(rec[k])
        out[f"f1/{name}"] = float(f1[k])
        out[f"auc/{name}"] = class_aucs[k]
    return out


def confusion(y_true: np.ndarray, probs: np.ndarray, *, n_classes: int,
              threshold: float | None = None) -> list[list[int]]:
    """Confusion matrix as nested lists: rows are true classes, columns predicted classes (see :func:`decide`)."""
    y_pred = decide(probs, threshold)
    return confusion_matrix(y_true, y_pred, labels=np.arange(n_classes)).tolist()


def aggregate_folds(per_fold: Sequence[dict[str, float]]) -> dict[str, dict[str, object]]:
    """Mean, sample std (ddof=1), min and max of every metric across folds, with the fold values.

    NaN fold values (undefined AUCs) are left out of the statistics and kept as None in ``folds``.
    """
    names = [k for k in per_fold[0]] if per_fold else []
    out: dict[str, dict[str, object]] = {}
    for name in names:
        values = np.array([fold.get(name, math.nan) for fold in per_fold], dtype=np.float64)
        finite = values[~np.isnan(values)]
        stats = {
            "mean": float(finite.mean()) if len(finite) else None,
            "std": float(finite.std(ddof=1)) if len(finite) > 1 else None,  # undefined for one value
            "min": float(finite.min()) if len(finite) else None,
            "max": float(finite.max()) if len(finite) else None,
            "folds": [None if math.isnan(v) else float(v) for v in values],
        }
        out[name] = stats
    return out
