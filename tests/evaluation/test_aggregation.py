"""Patient-level aggregation of image probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from medclf.evaluation.aggregation import aggregate_units, unit_metrics

UNITS = np.array(["p1", "p1", "p1", "p2", "p2", "p3"])
Y = np.array([1, 1, 1, 0, 0, 0])
PROBS = np.array([[0.4, 0.6], [0.45, 0.55], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8]])


def test_mean_and_vote() -> None:
    ids, labels, probs, counts = aggregate_units(UNITS, Y, PROBS, method="mean")
    assert ids.tolist() == ["p1", "p2", "p3"] and labels.tolist() == [1, 0, 0] and counts.tolist() == [3, 2, 1]
    assert probs[0] == pytest.approx([0.5833333, 0.4166667])
    _, _, votes, _ = aggregate_units(UNITS, Y, PROBS, method="vote")
    assert votes[0] == pytest.approx([1 / 3, 2 / 3])


def test_unit_metrics_and_rows() -> None:
    metrics, rows = unit_metrics(UNITS, Y, PROBS, class_names=["neg", "pos"], method="vote")
    assert metrics["n_patients"] == 3 and metrics["accuracy"] == pytest.approx(2 / 3)
    assert set(metrics) == {"accuracy", "balanced_accuracy", "f1_macro", "auc_macro", "n_patients"}
    assert rows[0] == {"unit": "p1", "label": "pos", "prob_neg": pytest.approx(1 / 3),
                       "prob_pos": pytest.approx(2 / 3), "predicted": "pos", "n_images": 3}
