"""Multi-label metrics: pure functions of 0/1 targets (N, L) and sigmoid probabilities (N, L).

scikit-learn does the arithmetic. Metric names are part of the run-folder contract (``docs/outputs.md``):
``exact_match``, ``hamming_loss``, then ``f1_<avg>``, ``precision_<avg>``, ``recall_<avg>`` and ``auc_<avg>`` for
each average ``micro``, ``macro``, ``weighted``, ``samples``, then ``loss``; and per label ``precision/<l>``,
``recall/<l>``, ``f1/<l>``, ``auc/<l>``, ``support/<l>``, ``threshold/<l>``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    hamming_loss,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = ["AVERAGES", "MULTILABEL_SUMMARY", "cooccurrence", "multilabel_metrics", "tune_thresholds"]

AVERAGES = ("micro", "macro", "weighted", "samples")
MULTILABEL_SUMMARY = (
    "exact_match",
    "hamming_loss",
    *(f"{kind}_{avg}" for kind in ("f1", "precision", "recall", "auc") for avg in AVERAGES),
    "loss",
)


def _thresholds(thresholds: float | Sequence[float], n_labels: int) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    return np.full(n_labels, float(t)) if t.ndim == 0 else t


def multilabel_metrics(
    y_true: np.ndarray, probs: np.ndarray, *, class_names: Sequence[str], thresholds: float | Sequence[float] = 0.5
) -> dict[str, float]:
    """Every metric of a multi-label classifier at the given decision thresholds.

    Args:
        y_true: (N, L) 0/1 targets.
        probs: (N, L) independent label probabilities.
        class_names: the L label names.
        thresholds: one threshold for every label, or one per label; a label is predicted when p >= threshold.

    Returns:
        A flat dict. ``auc/<l>`` is NaN where label l is always or never present; the AUC averages leave such
        labels (and, for ``auc_samples``, images with all or none of the labels) out.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    t = _thresholds(thresholds, y.shape[1])
    pred = (p >= t).astype(np.int64)
    out: dict[str, float] = {
        "exact_match": float(accuracy_score(y, pred)),
        "hamming_loss": float(hamming_loss(y, pred)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for avg in AVERAGES:
            prec, rec, f1, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
            out[f"f1_{avg}"], out[f"precision_{avg}"], out[f"recall_{avg}"] = float(f1), float(prec), float(rec)
        prec, rec, f1, support = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    aucs = np.array([_auc(y[:, k], p[:, k]) for k in range(y.shape[1])])
    out |= _auc_averages(y, p, aucs)
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    out["loss"] = float(np.mean([log_loss(y[:, k], clipped[:, k], labels=[0, 1]) for k in range(y.shape[1])]))
    for k, name in enumerate(class_names):
        out[f"precision/{name}"] = float(prec[k])
        out[f"recall/{name}"] = float(rec[k])
        out[f"f1/{name}"] = float(f1[k])
        out[f"auc/{name}"] = float(aucs[k])
        out[f"support/{name}"] = float(support[k])
        out[f"threshold/{name}"] = float(t[k])
    return out


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return math.nan
    return float(roc_auc_score(y, scores))


def _auc_averages(y: np.ndarray, p: np.ndarray, aucs: np.ndarray) -> dict[str, float]:
    """``auc_<avg>`` for each of :data:`AVERAGES`, over the labels (or images) where an AUC is defined.

    scikit-learn's ``roc_auc_score(average=...)`` raises when one label (or, for ``samples``, one image) has a
    single class; a rare label missing from a split would then leave no average at all. Here such a label or
    image is left out of the mean (its ``auc/<l>`` stays NaN); an average is NaN only when none is defined.
    """
    defined = ~np.isnan(aucs)
    support = y.sum(axis=0).astype(np.float64)
    per_image = _row_aucs(y, p)
    return {
        "auc_micro": _auc(y.ravel(), p.ravel()),
        "auc_macro": float(aucs[defined].mean()) if defined.any() else math.nan,
        # a defined label has positives, so its weight (support) is positive
        "auc_weighted": float(np.average(aucs[defined], weights=support[defined])) if defined.any() else math.nan,
        "auc_samples": float(np.nanmean(per_image)) if (~np.isnan(per_image)).any() else math.nan,
    }


def _row_aucs(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(N,) the ROC AUC of each image's label scores against its labels (Mann-Whitney U with mid-ranks for
    ties, as ``roc_auc_score``); NaN for an image with all or none of the labels. Vectorised: one
    ``roc_auc_score`` call per image is seconds per epoch on a large validation split."""
    from scipy.stats import rankdata

    n_pos = y.sum(axis=1).astype(np.float64)
    n_neg = y.shape[1] - n_pos
    ranks = rankdata(p, axis=1)  # 1-based, ties get the mean of their ranks
    u = (ranks * y).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray, *, default: float = 0.5) -> np.ndarray:
    """Per label, the threshold (among the observed probabilities) that maximises F1 on ``y_true``.

    A label with no positive example keeps ``default``. Images with equal probabilities are predicted together
    (a label is predicted when p >= threshold), so F1 is evaluated only where the probability drops.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    out = np.full(y.shape[1], default)
    for k in range(y.shape[1]):
        if y[:, k].sum() == 0:
            continue
        order = np.argsort(-p[:, k], kind="stable")
        ranked = p[order, k]
        hits = np.cumsum(y[order, k])  # true positives when predicting the top i+1 images
        f1 = 2 * hits / (np.arange(1, len(order) + 1) + y[:, k].sum())
        # a cut inside a run of tied probabilities is no threshold: only the last index of each run is one
        last_of_tie = np.append(ranked[1:] != ranked[:-1], True)
        f1 = np.where(last_of_tie, f1, -1.0)
        out[k] = float(ranked[int(np.argmax(f1))])
    return out


def cooccurrence(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{a: {b: images carrying both a and b}}``; the diagonal counts images carrying the label."""
    y = np.asarray(labels, dtype=np.int64)
    counts = y.T @ y
    return {a: {b: int(counts[i, j]) for j, b in enumerate(class_names)} for i, a in enumerate(class_names)}
