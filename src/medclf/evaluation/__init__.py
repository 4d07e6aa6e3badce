"""Evaluation: metrics as pure functions of labels and probabilities, aggregation across folds."""

from medclf.evaluation.aggregation import UNIT_METRICS, aggregate_units, unit_metrics
from medclf.evaluation.metrics import (
    MONITORABLE,
    SUMMARY_METRICS,
    aggregate_folds,
    classification_metrics,
    confusion,
    higher_is_better,
)
from medclf.evaluation.multilabel import MULTILABEL_SUMMARY, cooccurrence, multilabel_metrics, tune_thresholds

__all__ = [
    "MONITORABLE",
    "MULTILABEL_SUMMARY",
    "SUMMARY_METRICS",
    "UNIT_METRICS",
    "aggregate_folds",
    "aggregate_units",
    "classification_metrics",
    "confusion",
    "cooccurrence",
    "higher_is_better",
    "multilabel_metrics",
    "tune_thresholds",
    "unit_metrics",
]
