"""Operating points: decision thresholds chosen on validation, read as a clinician reads a test.

A point is a threshold on one class's score (binary: the positive class, index 1; multi-class and multi-label:
each class or label one-vs-rest). ``"0.5"`` is fixed; ``"youden"`` maximises Youden's J (sensitivity +
specificity - 1) on the validation split; ``"sensitivity_0.90"`` is the highest threshold whose validation
sensitivity is at least 0.90. The thresholds are chosen on validation only and applied unchanged to every other
split and to the fold ensemble, where sensitivity, specificity, PPV, NPV and F1 are reported with percentile
bootstrap intervals (plain resampling of images, all points of a split from the same resamples). A value that
is undefined (sensitivity without positives, PPV without a positive decision) is None, never a crash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from medclf.evaluation.fast_metrics import resample_weights

__all__ = [
    "POINT_METRICS",
    "apply_points",
    "choose_thresholds",
    "one_vs_rest",
    "point_names",
    "point_rates",
    "youden_threshold",
]

POINT_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1")  # each with a bootstrap interval
_COUNTS = ("tp", "fp", "tn", "fn")


def point_names(sensitivities: Sequence[float]) -> list[str]:
    """The point names, in report order: ``0.5``, ``youden``, then ``sensitivity_<s:.2f>`` per target."""
    return ["0.5", "youden", *(f"sensitivity_{s:.2f}" for s in sensitivities)]


def one_vs_rest(
    labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str], *, multilabel: bool
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The binary problems whose thresholds are chosen: ``(class names, truth (N, C) 0/1, scores (N, C))``.

    Two classes, single-label: only the positive class (index 1). Otherwise every class (label) against the rest.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if multilabel:
        return list(class_names), np.asarray(labels, dtype=np.int64), probs
    labels = np.asarray(labels, dtype=np.int64)
    columns = [1] if len(class_names) == 2 else list(range(len(class_names)))
    truth = np.stack([(labels == c).astype(np.int64) for c in columns], axis=1) if len(labels) else (
        np.zeros((0, len(columns)), dtype=np.int64))
    return [class_names[c] for c in columns], truth, probs[:, columns]


def youden_threshold(truth: np.ndarray, scores: np.ndarray) -> float | None:
    """The threshold maximising Youden's J (sensitivity + specificity - 1); None without both classes."""
    if not 0 < truth.sum() < len(truth):
        return None
    fpr, tpr, thresholds = roc_curve(truth, scores, drop_intermediate=False)
    # thresholds[0] is +inf (nothing positive): skipped, a JSON threshold must be a number
    best = 1 + int(np.argmax((tpr - fpr)[1:]))  # ties: the first, i.e. the highest threshold
    return float(thresholds[best])


def _reaching(truth: np.ndarray, scores: np.ndarray, target: float) -> float | None:
    """The highest threshold whose sensitivity (score >= threshold) is at least ``target``; None without positives."""
    positives = np.sort(scores[truth == 1])[::-1]
    if not len(positives):
        return None
    # the k highest positive scores reach k / n_pos; the tolerance keeps 0.9 * 10 from becoming 10
    k = max(1, math.ceil(target * len(positives) - 1e-9))
    return float(positives[k - 1])


def choose_thresholds(truth: np.ndarray, scores: np.ndarray, *, sensitivities: Sequence[float]) -> dict[str, Any]:
    """Each point's threshold on one binary problem's validation ``truth`` (N,) 0/1 and ``scores`` (N,).

    Returns:
        ``{point: threshold or None}`` (None: undefined on this split, e.g. Youden's J without negatives).
    """
    truth, scores = np.asarray(truth, dtype=np.int64), np.asarray(scores, dtype=np.float64)
    out: dict[str, Any] = {"0.5": 0.5, "youden": youden_threshold(truth, scores)}
    for s, name in zip(sensitivities, point_names(sensitivities)[2:]):
        out[name] = _reaching(truth, scores, s)
    return out


def _rates(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """The point metrics of count arrays (any shape); NaN where a denominator is 0."""
    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)

    return {"sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp), "ppv": ratio(tp, tp + fp),
            "npv": ratio(tn, tn + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn)}


def point_rates(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Counts and metrics of one binary problem at one threshold (a positive decision: score >= threshold)."""
    truth = np.asarray(truth, dtype=bool)
    decided = np.asarray(scores, dtype=np.float64) >= threshold
    counts = {"tp": int((truth & decided).sum()), "fp": int((~truth & decided).sum()),
              "tn": int((~truth & ~decided).sum()), "fn": int((truth & ~decided).sum())}
    rates = _rates(*(np.asarray(counts[c], dtype=np.float64) for c in _COUNTS))
    return {name: _number(float(value)) for name, value in rates.items()} | counts


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _bootstrap(
    truth: np.ndarray, decided: np.ndarray, *, n_resamples: int, confidence: float, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Percentile intervals of every point metric of every column of ``decided`` (N, M) against ``truth`` (N, M).

    Each resample is a vector of image weights (how often each image was drawn); the counts of all columns
    and all resamples are then one matrix product: 1000 resamples of thousands of images in a fraction of a second.

    Returns:
        ``{metric: (low (M,), high (M,), defined (M,) bool)}``.
    """
    n = len(truth)
    weights = resample_weights(n, n_resamples=n_resamples, seed=seed)  # the metric intervals' resamples too
    t, d = truth.astype(np.float64), decided.astype(np.float64)
    tp, fp, fn = np.split(weights @ np.hstack([t * d, (1 - t) * d, t * (1 - d)]), 3, axis=1)
    tn = n - tp - fp - fn  # every resample draws n images
    alpha = (1 - confidence) / 2
    out = {}
    for name, values in _rates(tp, fp, tn, fn).items():  # (n_resamples, M)
        low, high = np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
        defined = np.zeros(values.shape[1], dtype=bool)
        for m in range(values.shape[1]):
            v = values[:, m][~np.isnan(values[:, m])]
            if len(v) >= n_resamples / 2:  # bootstrap_intervals' rule: dropped when mostly undefined
                defined[m] = True
                low[m], high[m] = np.quantile(v, [alpha, 1 - alpha])
        out[name] = (low, high, defined)
    return out


def apply_points(
    truth: np.ndarray,
    scores: np.ndarray,
    thresholds: dict[str, dict[str, float | None]],
    class_names: Sequence[str],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every point of every binary problem applied to one split, with percentile bootstrap intervals.

    Args:
        truth: (N, C) 0/1 truth of the C binary problems (:func:`one_vs_rest`).
        scores: (N, C) their scores.
        thresholds: ``{class: {point: threshold or None}}`` chosen on validation (:func:`choose_thresholds`).
        class_names: the C problems' names, in column order.
        n_resamples: bootstrap resamples; confidence: the intervals' level; seed: the resampling seed.

    Returns:
        ``{class: {point: {"threshold", sensitivity, specificity, ppv, npv, f1, tp, fp, tn, fn,
        "intervals": {metric: [low, high] or None}}}}``; a point without a threshold has None values.
    """
    truth, scores = np.asarray(truth, dtype=np.int64), np.asarray(scores, dtype=np.float64)
    columns = [(j, c, p, t) for j, c in enumerate(class_names) for p, t in thresholds[c].items() if t is not None]
    intervals: dict[tuple[str, str], dict[str, list[float] | None]] = {}
    if columns and len(truth):
        t_cols = truth[:, [j for j, *_ in columns]]
        d_cols = np.stack([scores[:, j] >= t for j, _, _, t in columns], axis=1)
        boot = _bootstrap(t_cols, d_cols, n_resamples=n_resamples, confidence=confidence, seed=seed)
        for m, (_, c, p, _) in enumerate(columns):
            intervals[c, p] = {name: [float(low[m]), float(high[m])] if defined[m] else None
                               for name, (low, high, defined) in boot.items()}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for j, c in enumerate(class_names):
        out[c] = {}
        for p, t in thresholds[c].items():
            if t is None:
                out[c][p] = {"threshold": None, **dict.fromkeys((*POINT_METRICS, *_COUNTS)),
                             "intervals": dict.fromkeys(POINT_METRICS)}
                continue
            values = point_rates(truth[:, j], scores[:, j], t)
            found = intervals.get((c, p), {})
            # a value undefined on the split itself gets no interval, whatever its resamples gave
            out[c][p] = {"threshold": t, **values, "intervals": {
                name: found.get(name) if values[name] is not None else None for name in POINT_METRICS}}
    return out
