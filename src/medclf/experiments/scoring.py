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
from medclf.data.classes import positive_class
from medclf.data.splitting import Fold
from medclf.evaluation.aggregation import unit_metrics
from medclf.evaluation.fast_metrics import metric_intervals, pack_multilabel
from medclf.evaluation.metrics import SUMMARY_METRICS, aggregate_folds, classification_metrics, confusion, decide
from medclf.evaluation.multilabel import MULTILABEL_SUMMARY, multilabel_metrics, tune_thresholds
from medclf.evaluation.operating_points import (
    POINT_METRICS,
    apply_points,
    choose_thresholds,
    one_vs_rest,
    youden_threshold,
)
from medclf.evaluation.statistics import t_interval
from medclf.runfolder import prob_column, prob_columns

__all__ = [
    "INTERVAL_SPLITS",
    "LEVELS",
    "unit_prediction_columns",
    "folds_csv_columns",
    "folds_csv_extras",
    "fold_spread",
    "operating_point_columns",
    "operating_point_cells",
    "split_intervals",
    "summary_operating_points",
    "summary_spread",
    "copies_warning",
    "run_audit",
    "score_split",
    "split_summary",
    "summary_metric_names",
    "write_skipped",
]

# (level name, ImageSet attribute holding the unit ids, count key, id column of <level>_predictions.csv)
LEVELS = (("patient", "groups", "n_patients", "patient_id"), ("study", "studies", "n_studies", "study_id"))
_LEVEL_COLUMNS = ("accuracy", "f1_macro", "auc_macro")  # per level in folds.csv: patient_accuracy, ...
INTERVAL_SPLITS = ("holdout", "test")  # the splits whose headline metrics get bootstrap intervals per fold
_POINT_COLUMNS = ("threshold", *POINT_METRICS)  # per binary operating point in folds.csv


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
    exact, near, shared = report["exact_duplicates"], report["near_duplicates"], report["patient_overlap"]["count"]
    if exact["count"] or near["count"] or shared:
        leaking = any(f["exact"] or f["near"] or f["patient"] for f in report.get("folds", []))
        scope = " (each fold folder on its own)" if data.fold_ids is not None else ""  # an image in 3 folds counts 3x
        log(f"audit{scope}: {_plural(exact['count'], 'exact duplicate')} ({exact['across']} across splits), "
            f"{_plural(near['count'], 'near-duplicate pair')} ({near['across']} across), "
            f"{_plural(shared, 'patient')} in several splits; see audit.json"
            + ("" if leaking else "; none of them leaks: no fold is evaluated on a copy of its training images or "
               "on its training patients"))
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


def copies_warning(data: ImageSet) -> str | None:
    """prepare_study's warning about byte-identical source files (``data.duplicates``), or None when there are none.

    An image of a fold-folder set seen through several folds is no copy (see
    :func:`medclf.data.sources.find_duplicates`), so such a set warns only about copies inside one fold.
    """
    if not data.duplicates:
        return None
    where = dict(zip(data.ids.tolist(), _locations(data)))
    n_copies = sum(len(g) - 1 for g in data.duplicates)
    across = sum(where[i] != where[g[0]] for g in data.duplicates for i in g[1:])
    text = (f"warning: {_plural(n_copies, 'image')} {'is a' if n_copies == 1 else 'are'} byte-identical "
            f"cop{'y' if n_copies == 1 else 'ies'} of another ({_plural(len(data.duplicates), 'group')}, listed in "
            "data.json under duplicates). A copy in the same split as its original is no leak, it only counts that "
            "image twice")
    if across:
        who = "it is" if n_copies == 1 else f"{across} of them {'is' if across == 1 else 'are'}"
        text += f"; {who} in another split than the original, which the leakage audit checks per fold (audit.json)"
    return text


def _locations(data: ImageSet) -> list[str]:
    """Where each image sits: its split, or ``Fold<k>/<split>`` for predefined fold folders."""
    if data.fold_ids is None:
        return data.splits.astype(str).tolist()
    return [f"Fold{k}/{s}" for k, s in zip(data.fold_ids.tolist(), data.splits.astype(str).tolist())]


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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
        evaluation: the ``evaluation`` section (patient aggregation, decision threshold).
        thresholds: multi-label per-label thresholds, or a two-class task's positive-class threshold (one value),
            already chosen on val; None: choose them now (``tuned`` is chosen on ``val`` only, 0.5 elsewhere).

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
    if thresholds is None and len(names) == 2:
        thresholds = binary_threshold(evaluation, y, probs, tune=split == "val")
    threshold = None if thresholds is None else float(thresholds[0])
    metrics = classification_metrics(y, probs, class_names=names, threshold=threshold)
    rows = [
        {"split": split, "id": data.ids[i], "label": names[int(y_i)], "predicted": names[int(d)]}
        | {prob_column(c): float(v) for c, v in zip(names, p)}
        for i, y_i, p, d in zip(idx, y, probs, decide(probs, threshold))
    ]
    unit_rows: dict[str, list[dict]] = {}
    for level, attribute, count_key, id_column in LEVELS:
        units = getattr(data, attribute)
        if units is None:
            continue
        metrics[level], level_rows = unit_metrics(
            units[idx], y, probs, class_names=names, method=evaluation.patient_aggregation, count_key=count_key,
            threshold=threshold,
        )
        unit_rows[level] = [{"split": split, id_column: r.pop("unit")} | r for r in level_rows]
    return metrics, confusion(y, probs, n_classes=len(names), threshold=threshold), rows, unit_rows, thresholds


def binary_threshold(evaluation: EvaluationConfig, y: np.ndarray, probs: np.ndarray, *,
                     tune: bool) -> np.ndarray | None:
    """A two-class task's decision threshold on the positive class from ``evaluation.threshold``, as a one-value
    array; None at 0.5 (the same decision as the most probable class, ties aside).

    ``tuned`` maximises Youden's J on ``y``/``probs`` when ``tune`` (the fold's validation split), which does not
    depend on the class balance, so it carries to a test split whose prevalence differs; 0.5 where J is undefined.
    """
    fixed = evaluation.threshold
    if fixed == "tuned":
        chosen = youden_threshold((np.asarray(y) == 1).astype(np.int64), probs[:, 1]) if tune else None
        return None if chosen is None else np.array([chosen])
    return None if float(fixed) == 0.5 else np.array([float(fixed)])


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


# ---------------------------------------------------------------------------- operating points, intervals
def split_intervals(
    y: np.ndarray, probs: np.ndarray, *, multilabel: bool, evaluation: EvaluationConfig, seed: int,
    thresholds: np.ndarray | None = None,
) -> dict[str, list[float] | None]:
    """Bootstrap intervals of one prediction set's headline metrics, decided at ``thresholds`` (multi-label: one
    per label; two classes: the positive class's, one value; None: 0.5 or the most probable class).

    Args:
        y: (N,) class indices, or (N, K) multi-hot labels.
        probs: (N, K) probabilities.
    """
    cfg = evaluation.operating_points
    threshold = None
    if multilabel:
        t = thresholds if thresholds is not None else np.full(probs.shape[1], 0.5)
        y = pack_multilabel(y, probs >= t)
    elif thresholds is not None:
        threshold = float(thresholds[0])
    return metric_intervals(y, probs, multilabel=multilabel, names=summary_metric_names(multilabel),
                            n_resamples=cfg.n_bootstrap, confidence=cfg.confidence, seed=seed, threshold=threshold)


def fold_spread(
    data: ImageSet, scored: dict[str, tuple[np.ndarray, np.ndarray]], *, evaluation: EvaluationConfig, seed: int,
    thresholds: np.ndarray | None = None,
) -> dict[str, Any]:
    """A fold's ``operating_points`` and ``intervals`` (metrics.json) from its scored splits ``{split: (idx, probs)}``.

    The thresholds are chosen on ``val`` only (none there: only ``0.5``) and applied unchanged to every split.
    """
    cfg = evaluation.operating_points
    names = data.class_names
    problems: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {
        split: one_vs_rest(data.labels[idx], probs, names, multilabel=data.multilabel)
        for split, (idx, probs) in scored.items()
    }
    classes = one_vs_rest(data.labels[:0], np.zeros((0, len(names))), names, multilabel=data.multilabel)[0]
    chosen: dict[str, dict[str, float | None]] = {}
    empty = np.zeros((0, len(classes)))
    _, val_truth, val_scores = problems.get("val", (classes, empty, empty))
    for j, c in enumerate(classes):  # no val split: only 0.5 is defined
        chosen[c] = choose_thresholds(val_truth[:, j], val_scores[:, j], sensitivities=cfg.sensitivity)
    splits = {
        split: apply_points(truth, scores, chosen, classes, n_resamples=cfg.n_bootstrap, confidence=cfg.confidence,
                            seed=seed)
        for split, (_, truth, scores) in problems.items()
    }
    intervals = {
        split: split_intervals(data.labels[idx], probs, multilabel=data.multilabel, evaluation=evaluation, seed=seed,
                               thresholds=thresholds)
        for split, (idx, probs) in scored.items() if split in INTERVAL_SPLITS
    }
    return {
        "operating_points": {"positive_class": positive_class(names, multilabel=data.multilabel),
                             "thresholds": chosen, "splits": splits},
        "intervals": intervals,
    }


def _stats(values: list[float | None], confidence: float) -> dict[str, Any]:
    """aggregate_folds' statistics of one point metric, with its t-interval across folds (clipped to [0, 1])."""
    stats = aggregate_folds([{"v": np.nan if v is None else v} for v in values])["v"]
    ci = t_interval([np.nan if v is None else v for v in values], confidence=confidence)
    stats["ci"] = None if ci is None else [min(max(ci[0], 0.0), 1.0), min(max(ci[1], 0.0), 1.0)]
    return stats


def summary_operating_points(
    results: list[dict[str, Any]], *, evaluation: EvaluationConfig, positive: str | None,
    ensemble: tuple[list[str], np.ndarray, np.ndarray] | None = None, seed: int = 0,
) -> dict[str, Any] | None:
    """summary.json's ``operating_points``: the mean fold thresholds (what runfolder.operating_thresholds reads),
    each point's metrics across folds per split, and the ensemble's test metrics at the mean thresholds.

    Args:
        results: the folds' metrics.json contents.
        positive: the positive class of a two-class task (None otherwise).
        ensemble: the ensemble's one-vs-rest test problems (:func:`one_vs_rest`), or None.
    """
    found = [r["operating_points"] for r in results if "operating_points" in r]
    if not found or len(found) != len(results):
        return None  # a fold written before operating points existed: no across-fold summary
    cfg = evaluation.operating_points
    thresholds, mean_thresholds = [], {}
    for c, points in found[0]["thresholds"].items():
        mean_thresholds[c] = {}
        for p in points:
            folds = [f["thresholds"][c].get(p) for f in found]
            defined = [t for t in folds if t is not None]
            mean_thresholds[c][p] = float(np.mean(defined)) if defined else None
            if defined:  # runfolder.operating_thresholds reads numbers only
                thresholds.append({"class": c, "point": p, "threshold": mean_thresholds[c][p], "folds": folds})
    splits = [s for s in found[0]["splits"] if all(s in f["splits"] for f in found)]
    metrics = {
        s: {c: {p: {m: _stats([f["splits"][s][c][p][m] for f in found], cfg.confidence)
                    for m in ("threshold", *POINT_METRICS)} for p in points} for c, points in mean_thresholds.items()}
        for s in splits
    }
    names = list(next(iter(mean_thresholds.values()), {}))
    out: dict[str, Any] = {"positive_class": positive, "points": names, "thresholds": thresholds, "metrics": metrics,
                           "confidence": cfg.confidence, "n_bootstrap": cfg.n_bootstrap}
    if ensemble is not None:
        classes, truth, scores = ensemble
        out["ensemble"] = {"test": apply_points(truth, scores, mean_thresholds, classes, n_resamples=cfg.n_bootstrap,
                                                confidence=cfg.confidence, seed=seed)}
    return out


def operating_point_columns(class_names: list[str], *, multilabel: bool, points: list[str]) -> list[str]:
    """folds.csv's operating-point columns: a two-class task's positive class only (``sensitivity@youden/<c>``);
    the one-vs-rest points of more classes are in metrics.json and summary.json (a table per class would make
    folds.csv hundreds of columns wide)."""
    positive = positive_class(class_names, multilabel=multilabel)
    if positive is None:
        return []
    return [f"{m}@{p}/{positive}" for p in points for m in _POINT_COLUMNS]


def operating_point_cells(block: dict[str, dict[str, dict[str, Any]]] | None, positive: str | None) -> dict[str, Any]:
    """The folds.csv cells of one split's operating points ``{class: {point: values}}`` (binary only)."""
    if not block or positive is None or positive not in block:
        return {}
    return {f"{m}@{p}/{positive}": values.get(m) for p, values in block[positive].items() for m in _POINT_COLUMNS}


def summary_spread(
    results: list[dict[str, Any]], data: ImageSet, *, evaluation: EvaluationConfig, seed: int,
    ensemble: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """summary.json's ``operating_points``, ``ensemble_intervals`` and (one fold) ``fold_intervals``.

    Args:
        results: the folds' metrics.json contents.
        ensemble: the ensemble's test set ``{"y", "probs", "thresholds"}`` (class indices or multi-hot), or None.
    """
    names, multilabel = data.class_names, data.multilabel
    problems = None if ensemble is None else one_vs_rest(ensemble["y"], ensemble["probs"], names, multilabel=multilabel)
    out: dict[str, Any] = {}
    points = summary_operating_points(results, evaluation=evaluation, ensemble=problems, seed=seed,
                                      positive=positive_class(names, multilabel=multilabel))
    if points is not None:
        out["operating_points"] = points
    if ensemble is not None:
        out["ensemble_intervals"] = {"test": split_intervals(
            ensemble["y"], ensemble["probs"], multilabel=multilabel, evaluation=evaluation, seed=seed,
            thresholds=ensemble.get("thresholds"))}
    if len(results) == 1 and results[0].get("intervals"):  # no spread across folds: the bootstrap's instead
        out["fold_intervals"] = results[0]["intervals"]
    return out
