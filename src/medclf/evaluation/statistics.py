"""Confidence intervals: pure functions of per-fold values or of labels and probabilities.

The t-interval summarises a metric across folds; the bootstrap interval summarises one set of predictions
(the fold ensemble's test predictions), resampling images with replacement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

__all__ = ["bootstrap_interval", "t_interval"]


def t_interval(values: Sequence[float], *, confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval for the mean of ``values`` (NaNs dropped); None with fewer than two values.

    Fold results are not independent (their training sets overlap), so the interval is optimistic; it is the
    conventional summary, and the paired tests of a sweep use the corrected variance instead.
    """
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) < 2:
        return None
    mean, sem = float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))
    if sem == 0.0:
        return (mean, mean)
    half = float(stats.t.ppf(0.5 + confidence / 2, df=len(x) - 1)) * sem
    return (mean - half, mean + half)


def bootstrap_interval(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    probs: np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``metric(y_true, probs)`` over images resampled with replacement.

    Resamples on which the metric is undefined (NaN, e.g. an AUC on a resample missing a class) are dropped;
    None when fewer than half of them are defined.
    """
    rng = np.random.default_rng(seed)
    n = len(y_true)
    if n == 0:
        return None
    scores = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        value = metric(y_true[idx], probs[idx])
        if value is not None and not math.isnan(value):
            scores.append(value)
    if len(scores) < n_resamples / 2:
        return None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(scores, [alpha, 1 - alpha])
    return (float(low), float(high))
