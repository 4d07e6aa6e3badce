"""Evaluation: metrics as pure functions of labels and probabilities, aggregation across folds."""

from medclf.evaluation.metrics import (
    MONITORABLE,
    SUMMARY_METRICS,
    aggregate_folds,
    classification_metrics,
    confusion,
)

__all__ = ["MONITORABLE", "SUMMARY_METRICS", "aggregate_folds", "classification_metrics", "confusion"]
