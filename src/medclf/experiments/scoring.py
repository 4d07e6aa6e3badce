"""What a study does around the fit: the leakage audit before the folds run, and the scoring of one split
(single- or multi-label, image level plus patient and study level) into metrics and prediction rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medclf import runfolder
from medclf.config import Config, EvaluationConfig
from medclf.data import ImageSet
from medclf.data.audit import apply_leakage_policy, audit_dataset
from medclf.data.splitting import Fold
from medclf.evaluation.aggregation import unit_metrics
from medclf.evaluation.metrics import SUMMARY_METRICS, aggregate_folds, classification_metrics, confusion
from medclf.evaluation.multilabel import MULTILABEL_SUMMARY, multilabel_metrics, tune_thresholds
from medclf.runfolder import prob_column, prob_columns

__all__ = [
    "LEVELS",
    "unit_prediction_columns",
    "folds_csv_columns",
    "folds_csv_extras",
    "run_audit",
    "score_split",
    "split_summary",
    "summary_metric_names",
    "write_skipped",
]

# (level name, ImageSet attribute holding the unit ids, count key, id column of <level>_predictions.csv)
LEVELS = (("patient", "groups", "n_patients", "patient_id"), ("study", "studies", "n_studies", "study_id"))
_LEVEL_COLUMNS = ("accuracy", "f1_macro", "auc_macro")  # per level in folds.csv: patient_accuracy, ...


# ---------------------------------------------------------------------------------------------- audit
def run_audit(config: Config, data: ImageSet, folds: list[Fold], out: Path, log: Any) -> list[Fold]:
    """Audit data and folds, write ``out/audit.json``, apply ``audit.leakage``; the folds to run.

    Raises:
        DataError: ``audit.leakage: fail`` and a fold's evaluation images leak from its training images.
    """
    cfg = config.audit
    result = audit_dataset(
        data, folds, near_distance=cfg.near_distance, near_correlation=cfg.near_correlation,
        near=cfg.near_duplicates,
    )
    report = result.report | {"policy": cfg.leakage, "dropped": {}}
    runfolder.write_json(out / runfolder.AUDIT, report)  # first: a refused run still shows why
    exact, near = report["exact_duplicates"], report["near_duplicates"]
    if exact["count"] or near["count"] or report["patient_overlap"]["count"]:
        log(f"audit: {exact['count']} exact duplicates ({exact['across']} across splits), {near['count']} "
            f"near-duplicate pairs ({near['across']} across), {report['patient_overlap']['count']} patients in several "
            "splits; see audit.json")
    kept, lines = apply_leakage_policy(data, folds, result, cfg.leakage)
    for line in lines:
        log(f"warning: {line}")
    if cfg.leakage == "drop_duplicates":
        report["dropped"] = {
            str(f.index): sum(len(getattr(f, s)) - len(getattr(k, s)) for s in ("val", "holdout", "test"))
            for f, k in zip(folds, kept)
        }
        runfolder.write_json(out / runfolder.AUDIT, report)
    return kept


def write_skipped(data: ImageSet, out: Path, log: Any) -> None:
    """``out/skipped.csv`` (path, reason) of the files ``on_bad_image: skip`` left out, when there are any."""
    path = out / runfolder.SKIPPED
    if not data.skipped:
        path.unlink(missing_ok=True)
        return
    runfolder.write_csv(path, [{"path": p, "reason": r} for p, r in data.skipped], ["path", "reason"])
    log(f"warning: skipped {len(data.skipped)} unreadable image files (data.on_bad_image: skip); see skipped.csv")


# -------------------------------------------------------------------------------------------- scoring
def score_split(
    data: ImageSet,
    idx: np.ndarray,
    probs: np.ndarray,
    *,
    split: str,
    evaluation: EvaluationConfig,
    thresholds: np.ndarray | None = None,
) -> tuple[dict[str, Any], list[list[int]] | None, list[dict], dict[str, list[dict]], np.ndarray | None]:
    """Score one split of a fold.

    Args:
        data: the dataset; ``idx`` indexes it, ``probs`` are the model's probabilities for those images.
        split: the split's name (a column of the prediction rows).
        evaluation: the ``evaluation`` section (patient aggregation, multi-label threshold).
        thresholds: multi-label per-label thresholds already chosen (on val); None: choose them now.

    Returns:
        (metrics, confusion or None for multi-label, prediction rows, {level: unit rows}, thresholds).
    """
    names = data.class_names
    y = data.labels[idx]
    if data.multilabel:
        if thresholds is None:
            fixed = evaluation.threshold
            thresholds = tune_thresholds(y, probs) if fixed == "tuned" else np.full(len(names), float(fixed))
        metrics = multilabel_metrics(y, probs, class_names=names, thresholds=thresholds)
        rows = [
            {"split": split, "id": data.ids[i], "label": _joined(names, y_i)}
            | {prob_column(c): float(v) for c, v in zip(names, p)}
            | {"predicted": _joined(names, p >= thresholds)}
            for i, y_i, p in zip(idx, y, probs)
        ]
        return metrics, None, rows, {}, thresholds
    metrics = classification_metrics(y, probs, class_names=names)
    rows = [
        {"split": split, "id": data.ids[i], "label": names[int(y_i)], "predicted": names[int(p.argmax())]}
        | {prob_column(c): float(v) for c, v in zip(names, p)}
        for i, y_i, p in zip(idx, y, probs)
    ]
    unit_rows: dict[str, list[dict]] = {}
    for level, attribute, count_key, id_column in LEVELS:
        units = getattr(data, attribute)
        if units is None:
            continue
        metrics[level], level_rows = unit_metrics(
            units[idx], y, probs, class_names=names, method=evaluation.patient_aggregation, count_key=count_key
        )
        unit_rows[level] = [{"split": split, id_column: r.pop("unit")} | r for r in level_rows]
    return metrics, confusion(y, probs, n_classes=len(names)), rows, unit_rows, None


def _joined(names: list[str], flags: np.ndarray) -> str:
    return "|".join(n for n, f in zip(names, flags) if f)


def unit_prediction_columns(level: str, class_names: list[str]) -> list[str]:
    id_column = next(c for name, _, _, c in LEVELS if name == level)
    return ["split", id_column, "label", *prob_columns(class_names), "predicted", "n_images"]


# -------------------------------------------------------------------------------------------- summary
def split_summary(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """Across folds: the image-level statistics of every metric, plus those of each level all folds have."""
    flat = [{k: v for k, v in m.items() if not isinstance(v, dict)} for m in per_fold]
    out: dict[str, Any] = aggregate_folds(flat)
    for level, *_ in LEVELS:
        if per_fold and all(isinstance(m.get(level), dict) for m in per_fold):
            out[level] = aggregate_folds([m[level] for m in per_fold])
    return out


def summary_metric_names(multilabel: bool) -> tuple[str, ...]:
    return MULTILABEL_SUMMARY if multilabel else SUMMARY_METRICS


def folds_csv_columns(class_names: list[str], *, multilabel: bool, levels: list[str]) -> list[str]:
    kinds = ("precision", "recall", "f1", "auc", "support", "threshold") if multilabel else (
        "precision", "recall", "f1", "auc")
    per_class = [f"{m}/{c}" for m in kinds for c in class_names]
    level_columns = [f"{level}_{m}" for level in levels for m in _LEVEL_COLUMNS]
    return ["fold", "split", "n_images", "best_epoch", *summary_metric_names(multilabel), *per_class, *level_columns]


def folds_csv_extras(metrics: dict[str, Any]) -> dict[str, Any]:
    """The ``<level>_<metric>`` cells of one folds.csv row."""
    return {
        f"{level}_{m}": metrics[level][m] for level, *_ in LEVELS if isinstance(metrics.get(level), dict)
        for m in _LEVEL_COLUMNS
    }
