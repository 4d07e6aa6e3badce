"""Calibration: does a predicted probability of 0.8 come true 80 % of the time? Pure functions of arrays.

A single-label classifier is judged on its top-label confidence (the probability of the predicted class
against whether the prediction was right); a multi-label one on every (image, label) probability against
whether the label is present. Both reduce to ``confidence`` in [0, 1] and a 0/1 ``outcome``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ReliabilityBins", "expected_calibration_error", "reliability_bins", "top_label_confidence"]


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width confidence bins of a reliability diagram.

    Attributes:
        edges: (n_bins + 1,) bin edges from 0 to 1; a bin holds ``edges[i] < c <= edges[i + 1]`` (the first
            also holds 0).
        counts: (n_bins,) predictions per bin.
        confidence: (n_bins,) mean confidence per bin; NaN for an empty bin.
        frequency: (n_bins,) observed frequency of the outcome per bin (accuracy, for top-label
            confidence); NaN for an empty bin.
    """

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    frequency: np.ndarray


def top_label_confidence(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The probability of each predicted class (the most probable, first on ties) and whether it is right.

    Args:
        y_true: (N,) true class indices.
        probs: (N, K) class probabilities.

    Returns:
        ``(confidence, correct)``: (N,) floats and (N,) 0/1 ints.
    """
    probs = np.asarray(probs, dtype=np.float64)
    predicted = probs.argmax(axis=1)
    return probs.max(axis=1), (predicted == np.asarray(y_true)).astype(np.int64)


def reliability_bins(confidence: np.ndarray, outcome: np.ndarray, *, n_bins: int = 10) -> ReliabilityBins:
    """Bin predictions by confidence and compare each bin's mean confidence with its observed frequency.

    Args:
        confidence: (N,) predicted probabilities in [0, 1].
        outcome: (N,) 1 where the predicted event happened, else 0.
        n_bins: number of equal-width bins over [0, 1].
    """
    confidence = np.clip(np.asarray(confidence, dtype=np.float64).ravel(), 0.0, 1.0)
    outcome = np.asarray(outcome, dtype=np.float64).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins, with 0 in the first: searchsorted(side="left") on the inner edges does exactly that
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / counts
        frequency = np.bincount(index, weights=outcome, minlength=n_bins) / counts
    return ReliabilityBins(edges=edges, counts=counts, confidence=mean_conf, frequency=frequency)


def expected_calibration_error(confidence: np.ndarray, outcome: np.ndarray, *, n_bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean of |frequency - confidence| over the bins.

    0 is perfectly calibrated; NaN when there are no predictions.
    """
    bins = reliability_bins(confidence, outcome, n_bins=n_bins)
    total = bins.counts.sum()
    if total == 0:
        return float("nan")
    filled = bins.counts > 0
    gaps = np.abs(bins.frequency[filled] - bins.confidence[filled])
    return float((gaps * bins.counts[filled]).sum() / total)
