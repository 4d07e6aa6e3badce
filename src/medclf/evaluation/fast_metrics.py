"""Metrics fast enough to bootstrap: the headline numbers of one resample from confusion counts and ranks.

A bootstrap rescores a set of predictions 1000 times, so it needs metrics that cost microseconds:
:func:`fast_metrics` and :func:`fast_multilabel_metrics` compute, in one pass per resample, the same numbers
as :func:`medclf.evaluation.metrics.classification_metrics` and
:func:`medclf.evaluation.multilabel.multilabel_metrics` (a test checks every name the evaluation lists),
without scikit-learn's per-call validation. :func:`metric_intervals` bootstraps them for a run's metrics.json
and summary.json; the report reuses the same functions (``medclf.reporting.intervals``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from medclf.evaluation.metrics import decide
from medclf.evaluation.statistics import bootstrap_intervals

__all__ = [
    "FAST_METRICS",
    "FAST_MULTILABEL_METRICS",
    "fast_metrics",
    "fast_multilabel_metrics",
    "metric_intervals",
    "pack_multilabel",
    "percentile_intervals",
    "resample_weights",
    "resampled_metrics",
]


# ---------------------------------------------------------------------------------------------- single-label
def _confusion(y: np.ndarray, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    k = probs.shape[1]
    return np.bincount(y * k + decide(probs, threshold), minlength=k * k).reshape(k, k)


def _per_class(y: np.ndarray, probs: np.ndarray,
               threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tp, predicted, actual, f1) per class; precision, recall and F1 are 0 where undefined (as sklearn)."""
    cm = _confusion(y, probs, threshold)
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


def fast_metrics(y: np.ndarray, probs: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """The single-label summary metrics of (N,) class indices and (N, K) probabilities, in one pass (decisions as
    :func:`~medclf.evaluation.metrics.decide` makes them)."""
    tp, predicted, actual, f1 = _per_class(y, probs, threshold)
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


# ------------------------------------------------------------------------------------- vectorised bootstrap
def resample_weights(n: int, *, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) counts of how often each image is drawn, resample by resample, from the same stream as
    :func:`~medclf.evaluation.statistics.bootstrap_intervals` (one ``integers(0, n, size=n)`` per resample)."""
    drawn = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    offsets = (drawn + n * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(offsets, minlength=n * n_resamples).reshape(n_resamples, n).astype(np.float64)


def _weighted_auc(weights: np.ndarray, positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The Mann-Whitney AUC (ties count one half) of every resample's weights (B, n); NaN with one class."""
    order = np.argsort(scores, kind="stable")
    s, pos = scores[order], positive[order].astype(bool)
    w = weights[:, order]
    w_pos, w_neg = w * pos, w * ~pos
    # each image's tie group [start, end] in the sorted order: negatives below it count 1, tied ones 1/2
    _, start, counts = np.unique(s, return_index=True, return_counts=True)
    group = np.repeat(np.arange(len(start)), counts)
    cum = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w_neg, axis=1)], axis=1)
    below, upto = cum[:, start[group]], cum[:, (start + counts)[group]]
    u = (w_pos * (below + 0.5 * (upto - below))).sum(axis=1)
    n_pos, n_neg = w_pos.sum(axis=1), w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def _mean_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row means of a / b with 0 where b is 0 (scikit-learn's zero_division=0)."""
    return np.divide(a, b, out=np.zeros(a.shape), where=b > 0).mean(axis=1)


def resampled_metrics(y: np.ndarray, probs: np.ndarray, weights: np.ndarray,
                      threshold: float | None = None) -> dict[str, np.ndarray]:
    """:func:`fast_metrics` of every resample at once: ``weights`` (B, N) image counts, values (B,) per metric.

    The counts of all resamples are matrix products (confusion cells, losses) and cumulative sums (AUC), so
    1000 resamples of thousands of images cost a fraction of a second instead of 1000 Python calls.
    """
    n, k = probs.shape
    cells = weights @ np.eye(k * k)[y * k + decide(probs, threshold)]  # (B, k*k) confusion counts
    cm = cells.reshape(len(weights), k, k)
    tp, predicted, actual = np.diagonal(cm, axis1=1, axis2=2), cm.sum(axis=1), cm.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        balanced = np.nanmean(np.where(actual > 0, tp / np.where(actual > 0, actual, 1), np.nan), axis=1)
    if k == 2:
        auc = _weighted_auc(weights, y == 1, probs[:, 1])
    else:
        auc = np.mean([_weighted_auc(weights, y == c, probs[:, c]) for c in range(k)], axis=0)  # NaN if any is
    clipped = np.clip(probs, 1e-7, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return {
        "accuracy": tp.sum(axis=1) / n,
        "balanced_accuracy": balanced,
        "precision_macro": _mean_ratio(tp, predicted),
        "recall_macro": _mean_ratio(tp, actual),
        "f1_macro": _mean_ratio(2 * tp, predicted + actual),
        "auc_macro": auc,
        "loss": weights @ -np.log(clipped[np.arange(n), y]) / n,
    }


def percentile_intervals(
    values: dict[str, np.ndarray], *, confidence: float = 0.95
) -> dict[str, list[float] | None]:
    """Percentile intervals of resampled ``values`` (B,) per metric: bootstrap_intervals' rule (NaNs dropped,
    None when fewer than half the resamples are defined)."""
    alpha = (1 - confidence) / 2
    out: dict[str, list[float] | None] = {}
    for name, v in values.items():
        defined = v[~np.isnan(v)]
        out[name] = ([float(np.quantile(defined, alpha)), float(np.quantile(defined, 1 - alpha))]
                     if len(defined) >= len(v) / 2 else None)
    return out


# ------------------------------------------------------------------------------------------------ intervals
def pack_multilabel(truth: np.ndarray, decided: np.ndarray) -> np.ndarray:
    """The packed ``y`` of :func:`fast_multilabel_metrics`: truth and decisions side by side, (N, 2K)."""
    return np.hstack([np.asarray(truth, dtype=np.int64), np.asarray(decided, dtype=np.int64)])


def metric_intervals(
    y: np.ndarray,
    probs: np.ndarray,
    *,
    multilabel: bool = False,
    names: Sequence[str] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    threshold: float | None = None,
) -> dict[str, list[float] | None]:
    """Percentile-bootstrap intervals of the fast metrics of one prediction set, resampling images (plain,
    not stratified), as JSON-ready ``{metric: [low, high]}`` (None where undefined in over half the resamples).

    Args:
        y: (N,) class indices, or for ``multilabel`` the packed (N, 2K) truth | decisions (:func:`pack_multilabel`).
        probs: (N, K) probabilities.
        names: metrics to bootstrap (default: every fast metric); names without a fast form are left out.
        threshold: single-label, two classes: the positive class's decision threshold (None: the most probable).
    """
    fast, fast_names = (fast_multilabel_metrics, FAST_MULTILABEL_METRICS) if multilabel else (
        fast_metrics, FAST_METRICS)
    kept = [n for n in (names if names is not None else fast_names) if n in fast_names]
    if not len(y) or not kept:
        return {}
    if not multilabel:  # vectorised: the same resamples and numbers as the loop below, far faster
        weights = resample_weights(len(y), n_resamples=n_resamples, seed=seed)
        values = resampled_metrics(np.asarray(y, dtype=np.int64), np.asarray(probs, dtype=np.float64), weights,
                                   threshold)
        return percentile_intervals({name: values[name] for name in kept}, confidence=confidence)
    found = bootstrap_intervals(fast, kept, np.asarray(y), np.asarray(probs, dtype=np.float64),
                                n_resamples=n_resamples, confidence=confidence, seed=seed)
    return {name: None if ci is None else [ci[0], ci[1]] for name, ci in found.items()}
