"""A study's summary: ``summary.json``, ``folds.csv`` and the test ensemble, rebuilt from the folds' results.

Every fold's ``metrics.json`` (and ``predictions.csv``) is read back, so a resumed study, a sweep and a study
whose folds ran in other processes or on other machines end with the same summary.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from medclf import __version__, runfolder
from medclf.config import Config, config_fingerprint
from medclf.data import ImageSet
from medclf.evaluation.metrics import classification_metrics, confusion, decide
from medclf.evaluation.multilabel import multilabel_metrics
from medclf.evaluation.statistics import corrected_resampled_ttest, wilcoxon_signed_rank
from medclf.experiments.comparison import verdict
from medclf.experiments.environment import run_environment
from medclf.experiments.gallery import write_gallery
from medclf.experiments.scoring import (
    LEVELS,
    folds_csv_columns,
    folds_csv_extras,
    operating_point_cells,
    operating_point_columns,
    split_summary,
    summary_spread,
)
from medclf.runfolder import fold_dir

__all__ = ["EVAL_SPLITS", "paired_against_baseline", "write_summary"]

EVAL_SPLITS = ("val", "holdout", "test")  # the parts of a fold that are predicted and scored
_PAIRED_METRIC, _ALPHA = "auc_macro", 0.05  # the baseline's paired test: threshold-free, defined for every task
_PROBE_WORDS = "a linear probe on its frozen features"
_BASELINE_COLUMNS = ("accuracy", "auc_macro")  # folds.csv: baseline_accuracy, baseline_auc_macro


def write_summary(
    out: Path, config: Config, data: ImageSet, data_info: dict, results: list[dict], *, timing: dict,
    n_folds: int | None = None,
) -> dict[str, Any]:
    splits = [s for s in EVAL_SPLITS if all(s in r["metrics"] for r in results)]
    metrics = {s: split_summary([r["metrics"][s] for r in results]) for s in splits}
    ensemble: dict[str, Any] = {}
    if "test" in splits and len(results) > 1:
        ensemble["test"] = _ensemble_test(out, data, [r["fold"] for r in results], _mean_thresholds(results))
    summary = {
        "name": config.name,
        "task": "multilabel" if data.multilabel else "multiclass",
        "metrics": metrics,
        "ensemble": {s: e["metrics"] for s, e in ensemble.items()},
        "ensemble_confusion": {s: e["confusion"] for s, e in ensemble.items()},
        "best_epochs": [r["best_epoch"] for r in results],
        # the folds summarised and how many the study has: cv.folds (--folds) may run a subset
        "folds": {"run": [r["fold"] for r in results], "n_folds": n_folds or len(results)},
        "timing": {
            "total_s": time.perf_counter() - timing["start"],
            "data_s": timing["data_s"],
            "fold_train_s": [r["timing"]["train_s"] for r in results],
        },
        "data": {k: v for k, v in data_info.items() if k != "duplicates"}
        | {"n_duplicates": data_info["duplicates"]["count"]},
        "model": {"architecture": config.model.name, "parameters": results[0]["parameters"]},
        "runtime": results[0]["runtime"],
        "environment": run_environment(results[0]["runtime"]),
        "config_fingerprint": config_fingerprint(config),
        "medclf_version": __version__,
    }
    summary |= summary_spread(results, data, evaluation=config.evaluation, seed=config.seed,
                              ensemble=ensemble.get("test"))
    if (baseline := _baseline_summary(results, splits)) is not None:
        summary["baseline"] = baseline
    runfolder.write_json(out / runfolder.SUMMARY, summary)
    _write_folds_csv(out, data, results, summary)
    write_gallery(out, data, [r["fold"] for r in results])
    return summary


def _mean_thresholds(results: list[dict]) -> np.ndarray | None:
    """The mean over folds of each label's threshold (multi-label) or of the positive class's (two classes, when
    ``evaluation.threshold`` is set); None otherwise."""
    if not all("thresholds" in r for r in results):
        return None
    return np.mean([list(r["thresholds"].values()) for r in results], axis=0)


def _ensemble_test(
    out: Path, data: ImageSet, fold_indices: list[int], thresholds: np.ndarray | None = None
) -> dict[str, Any]:
    """Each test image's mean probabilities over the folds that predicted it, read back from their predictions.csv.

    Multi-label: a label is predicted at the mean of the folds' thresholds for it; two classes: the positive class
    at the mean of the folds' thresholds when they have one (each chosen on its own validation split).

    Raises:
        RunFolderError: a fold's prediction row is not a probability vector (names the fold, file and image).
    """
    names = data.class_names
    parts = []
    for k in fold_indices:
        path = fold_dir(out, k) / runfolder.PREDICTIONS
        test = runfolder.read_predictions(path, names).get("test")
        if test is not None:
            parts.append((k, path, test))
    ids, labels, probs = runfolder.ensemble_mean(parts, multilabel=data.multilabel)
    shutil.rmtree(out / runfolder.ENSEMBLE, ignore_errors=True)  # its record must list only this ensemble's files
    if data.multilabel:
        y = np.array([[int(c in label.split("|")) for c in names] for label in labels])
        t = thresholds if thresholds is not None else np.full(len(names), 0.5)
        rows = [
            {"split": "test", "id": i, "label": label, "predicted": "|".join(c for c, v in zip(names, p >= t) if v)}
            | {runfolder.prob_column(c): float(v) for c, v in zip(names, p)}
            for i, label, p in zip(ids, labels, probs)
        ]
        _write_ensemble(out, rows, names)
        return {"metrics": multilabel_metrics(y, probs, class_names=names, thresholds=t), "confusion": [],
                "y": y, "probs": probs, "thresholds": t}  # y, probs: for the intervals and operating points
    y = np.array([names.index(label) for label in labels])
    threshold = None if thresholds is None else float(thresholds[0])
    rows = [
        {"split": "test", "id": i, "label": label, "predicted": names[int(d)]}
        | {runfolder.prob_column(c): float(v) for c, v in zip(names, p)}
        for i, label, p, d in zip(ids, labels, probs, decide(probs, threshold))
    ]
    _write_ensemble(out, rows, names)
    return {
        "metrics": classification_metrics(y, probs, class_names=names, threshold=threshold),
        "confusion": confusion(y, probs, n_classes=len(names), threshold=threshold),
        "y": y, "probs": probs, "thresholds": thresholds,
    }


def _write_ensemble(out: Path, rows: list[dict[str, Any]], names: list[str]) -> None:
    runfolder.write_predictions(out / runfolder.ENSEMBLE / runfolder.PREDICTIONS, rows, names)
    runfolder.record_complete(out / runfolder.ENSEMBLE, n_rows=len(rows))


def _write_folds_csv(out: Path, data: ImageSet, results: list[dict], summary: dict) -> None:
    levels = [level for level, attribute, *_ in LEVELS if getattr(data, attribute) is not None and not data.multilabel]
    points = summary.get("operating_points") or {}
    positive = points.get("positive_class")
    names = points.get("points", [])
    columns = folds_csv_columns(data.class_names, multilabel=data.multilabel, levels=levels)
    columns += operating_point_columns(data.class_names, multilabel=data.multilabel, points=names)
    columns += [f"baseline_{k}" for k in _BASELINE_COLUMNS]
    rows = []
    for r in results:
        for split, m in r["metrics"].items():
            cells = operating_point_cells(r.get("operating_points", {}).get("splits", {}).get(split), positive)
            base = r.get("baseline", {}).get("metrics", {}).get(split, {})  # empty cells: no baseline
            rows.append({"fold": r["fold"], "split": split, "n_images": r["n_images"][split],
                         "best_epoch": r["best_epoch"]} | m | folds_csv_extras(m) | cells
                        | {f"baseline_{k}": base.get(k, "") for k in _BASELINE_COLUMNS})
    for split, m in summary["ensemble"].items():
        n_test = results[0]["n_images"].get(split, "")
        cells = operating_point_cells(points.get("ensemble", {}).get(split), positive)
        rows.append({"fold": "ensemble", "split": split, "n_images": n_test, "best_epoch": ""} | m | cells)
    runfolder.write_csv(out / runfolder.FOLDS_CSV, rows, columns)


def _baseline_summary(results: list[dict], splits: list[str]) -> dict[str, Any] | None:
    """summary.json's ``baseline``: the probe's metrics across folds and, per split, the paired test of the
    model against it (test first: the split a user reads). None when no fold scored a baseline."""
    folds = [r for r in results if "baseline" in r]
    if not folds:
        return None
    scored = [s for s in splits if all(s in r["baseline"]["metrics"] for r in folds)]
    return {
        "kind": folds[0]["baseline"]["kind"],
        "metrics": {s: split_summary([r["baseline"]["metrics"][s] for r in folds]) for s in scored},
        "paired": {s: paired_against_baseline(folds, s) for s in ("test", "holdout", "val") if s in scored},
    }


def paired_against_baseline(results: list[dict], split: str) -> dict[str, Any]:
    """The model against its baseline on ``split``, fold by fold: means, difference, corrected t-test (None with
    one fold), Wilcoxon, ``beats`` (a positive difference at p < 0.05) and a sentence."""
    model = [r["metrics"][split].get(_PAIRED_METRIC) for r in results]
    base = [r["baseline"]["metrics"][split].get(_PAIRED_METRIC) for r in results]
    # scored over trained images per fold: the corrected t-test's allowance for the folds' shared training rows
    ratio = float(np.mean([r["n_images"][split] / max(r["n_images"]["train"], 1) for r in results]))
    test = corrected_resampled_ttest(model, base, test_train_ratio=ratio)
    model_mean, base_mean = _finite_mean(model), _finite_mean(base)
    diff = test[0] if test is not None else (
        None if model_mean is None or base_mean is None else model_mean - base_mean)
    p_value = None if test is None or math.isnan(test[2]) else test[2]
    if diff is None:
        sentence = f"no fold has a defined {_PAIRED_METRIC} for both, so nothing is compared"
    elif p_value is None:
        sentence = f"{_PAIRED_METRIC} {diff:+.3f} against {_PROBE_WORDS}; one fold, so no paired test"
    else:
        sentence = verdict(diff, p_value, metric=_PAIRED_METRIC, baseline=_PROBE_WORDS, alpha=_ALPHA)
    return {
        "metric": _PAIRED_METRIC, "model": model_mean, "baseline": base_mean, "diff": diff, "p_value": p_value,
        "wilcoxon_p": wilcoxon_signed_rank(model, base),
        "beats": bool(diff is not None and p_value is not None and diff > 0 and p_value < _ALPHA),
        "verdict": sentence,
    }


def _finite_mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else None
