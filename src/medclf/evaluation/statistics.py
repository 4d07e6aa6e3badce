"""Confidence intervals and paired tests: pure functions of per-fold values or of labels and probabilities.

The t-interval summarises a metric across folds; the bootstrap interval summarises one set of predictions
(the fold ensemble's test predictions), resampling images with replacement. The paired tests compare two
configurations evaluated on the same folds (a sweep): the corrected resampled t-test of Nadeau and Bengio
(2003) and the Wilcoxon signed-rank test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

__all__ = ["bootstrap_interval", "bootstrap_intervals", "corrected_resampled_ttest", "t_interval",
           "wilcoxon_signed_rank"]


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


def bootstrap_intervals(
    metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    names: Sequence[str],
    y_true: np.ndarray,
    probs: np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float] | None]:
    """Percentile bootstrap intervals of several metrics that one call ``metrics(y_true, probs)`` computes together.

    Images are resampled with replacement and each resample is scored once. Per metric, resamples where it is
    undefined (missing, NaN: an AUC on a resample missing a class) are dropped; None when fewer than half are
    defined.
    """
    n = len(y_true)
    if n == 0:
        return dict.fromkeys(names)
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        values = metrics(y_true[idx], probs[idx])
        for name in names:
            value = values.get(name)
            if value is not None and not math.isnan(value):
                scores[name].append(value)
    alpha = (1 - confidence) / 2
    return {name: (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))) if len(v) >= n_resamples / 2
            else None for name, v in scores.items()}


def bootstrap_interval(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    probs: np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of one ``metric(y_true, probs)`` (:func:`bootstrap_intervals`' rule)."""
    return bootstrap_intervals(lambda y, p: {"metric": metric(y, p)}, ["metric"], y_true, probs,
                               n_resamples=n_resamples, confidence=confidence, seed=seed)["metric"]


def _paired(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """``a - b`` over the folds where both are defined (None and NaN dropped pairwise)."""
    if len(a) != len(b):
        raise ValueError(f"paired tests need one value per fold on both sides, got {len(a)} and {len(b)}")
    defined = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return np.asarray([x - y for x, y in defined if not (math.isnan(x) or math.isnan(y))], dtype=float)


def corrected_resampled_ttest(
    a: Sequence[float], b: Sequence[float], *, test_train_ratio: float
) -> tuple[float, float, float] | None:
    """Nadeau and Bengio's corrected resampled t-test of the paired fold differences ``a - b``.

    The folds' training sets overlap, so the plain paired t-test underestimates the variance of the mean
    difference and finds differences that are not there. The correction replaces ``s**2 / J`` by
    ``(1 / J + n_test / n_train) * s**2`` (J folds, ``s`` the sample std of the differences); for plain
    k-fold cross-validation ``n_test / n_train = 1 / (k - 1)``. Two-sided, J - 1 degrees of freedom.

    Args:
        a: one value per fold for the first configuration.
        b: one value per fold for the second, on the same folds.
        test_train_ratio: images scored per fold divided by images trained on per fold.

    Returns:
        ``(mean difference, t statistic, two-sided p-value)``; None with fewer than two defined pairs.
        Identical differences on every fold give t = +-inf and p = 0 (or t = 0, p = 1 when they are all 0).
    """
    d = _paired(a, b)
    if len(d) < 2:
        return None
    mean, var = float(d.mean()), float(d.var(ddof=1))
    if var == 0.0:
        return (mean, 0.0, 1.0) if mean == 0.0 else (mean, math.copysign(math.inf, mean), 0.0)
    t_stat = mean / math.sqrt((1.0 / len(d) + test_train_ratio) * var)
    p_value = 2.0 * float(stats.t.sf(abs(t_stat), df=len(d) - 1))
    return (mean, t_stat, p_value)


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of scipy's Wilcoxon signed-rank test on the paired fold differences ``a - b``.

    None when it is undefined: fewer than two defined pairs, or every difference zero. With five folds the
    smallest possible p-value is 0.0625, so this test alone cannot reach 0.05; it is reported beside the t-test
    because it assumes no normality.
    """
    d = _paired(a, b)
    if len(d) < 2 or not np.any(d != 0):
        return None
    return float(stats.wilcoxon(d).pvalue)
