"""Patient- and study-level evaluation: image probabilities aggregated per unit (patient, study), then scored.

A clinician decides per patient (or per study), not per image. Each unit's probabilities are the mean of its
images' probabilities (``mean``) or the share of its images predicted as each class (``vote``); its true label
is the most frequent label of its images (ties go to the higher class index, for binary data the positive
class, since a patient with one positive study is a positive patient).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medclf.evaluation.metrics import classification_metrics, decide
from medclf.runfolder import prob_column

__all__ = ["UNIT_METRICS", "aggregate_units", "unit_metrics"]

UNIT_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro")


def aggregate_units(
    units: np.ndarray, y_true: np.ndarray, probs: np.ndarray, *, method: str = "mean",
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-unit (ids, labels, probabilities, image counts), units in sorted order.

    Args:
        units: (N,) the unit (patient or study id) of each image.
        y_true: (N,) true class indices.
        probs: (N, K) class probabilities.
        method: "mean" (mean probability) or "vote" (share of the images' predictions per class, each decided
            as :func:`~medclf.evaluation.metrics.decide` does with ``threshold``).
    """
    units = np.asarray(units).astype(str)
    probs = np.asarray(probs, dtype=np.float64)
    ids, inverse, counts = np.unique(units, return_inverse=True, return_counts=True)
    n_classes = probs.shape[1]
    if method == "vote":
        per_image = np.eye(n_classes)[decide(probs, threshold)]
    elif method == "mean":
        per_image = probs
    else:
        raise ValueError(f"aggregation method must be 'mean' or 'vote', got {method!r}")
    sums = np.zeros((len(ids), n_classes))
    np.add.at(sums, inverse, per_image)
    label_counts = np.zeros((len(ids), n_classes), dtype=np.int64)
    np.add.at(label_counts, (inverse, np.asarray(y_true, dtype=np.int64)), 1)
    labels = n_classes - 1 - label_counts[:, ::-1].argmax(axis=1)  # the most frequent; ties to the higher index
    return ids, labels, sums / counts[:, None], counts


def unit_metrics(
    units: np.ndarray,
    y_true: np.ndarray,
    probs: np.ndarray,
    *,
    class_names: Sequence[str],
    method: str = "mean",
    count_key: str = "n_patients",
    threshold: float | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """The unit-level metrics of one split and one row per unit.

    Returns:
        ``({accuracy, balanced_accuracy, f1_macro, auc_macro, <count_key>}, rows)``; each row has
        ``unit``, ``label``, ``prob_<class>``..., ``predicted``, ``n_images``.
    """
    ids, labels, unit_probs, counts = aggregate_units(units, y_true, probs, method=method, threshold=threshold)
    if method == "vote":
        threshold = None  # the images were decided at it; a unit takes its most frequent decision
    full = classification_metrics(labels, unit_probs, class_names=class_names, threshold=threshold)
    metrics: dict[str, float] = {name: full[name] for name in UNIT_METRICS}
    metrics[count_key] = len(ids)
    names = list(class_names)
    rows = [
        {"unit": str(u), "label": names[int(y)]}
        | {prob_column(c): float(v) for c, v in zip(names, p)}
        | {"predicted": names[int(d)], "n_images": int(n)}
        for u, y, p, n, d in zip(ids, labels, unit_probs, counts, decide(unit_probs, threshold))
    ]
    return metrics, rows
