"""The tables of a run report, built from :class:`~medclf.reporting.rundata.RunData` (no plotting here).

Each function returns :class:`~medclf.reporting.tables.Table` objects (or small text blocks); the sections
of :mod:`medclf.reporting.run_report` arrange them.
"""

from __future__ import annotations

import math
import platform
from importlib import metadata
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from medclf import __version__
from medclf.evaluation.metrics import SUMMARY_METRICS
from medclf.evaluation.multilabel import MULTILABEL_SUMMARY
from medclf.reporting.intervals import ensemble_intervals, fold_interval
from medclf.reporting.page import Block, KeyValues, Paragraph
from medclf.reporting.rundata import Predictions, RunData
from medclf.reporting.tables import Interval, MeanStd, Table, format_number

__all__ = [
    "PATIENT_METRICS",
    "audit_blocks",
    "audit_warning",
    "classification_report_table",
    "counts_table",
    "ensemble_bootstrap",
    "ensemble_table",
    "environment_table",
    "evaluation_sets",
    "fold_sizes_table",
    "headline_metrics",
    "metrics_table",
    "model_table",
    "operating_point_tables",
    "per_class_table",
    "patient_table",
    "skipped_table",
    "summary_table",
    "timing_table",
]

PATIENT_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro", "n_patients")
_CI_NOTE = ("95 % CI: Student-t interval of the mean across folds (optimistic: the folds' training sets overlap), "
            "clipped to [0, 1] for metrics bounded by 0 and 1; none for counts.")


def headline_metrics(run: RunData) -> list[str]:
    """The headline metric names present in the run's summary, in the documented order."""
    names = MULTILABEL_SUMMARY if run.multilabel else SUMMARY_METRICS  # the evaluation's lists, not a copy
    present = {m for split in run.summary.get("metrics", {}).values() for m in split}
    return [m for m in names if m in present]


def _is_stats(value: Any) -> bool:
    return isinstance(value, dict) and "mean" in value


def is_count(name: str) -> bool:
    """Whether a metric name is a count (``n_patients``, ``support/<class>``): shown without decimals."""
    return name.startswith("n_") or name.split("/")[0] == "support"


def _mean_std(stats: dict[str, Any] | None, *, count: bool = False) -> MeanStd:
    return MeanStd(None, None) if not stats else MeanStd(stats.get("mean"), stats.get("std"), count=count)


def _interval(values: list[float | None], name: str) -> Interval:
    ci = None if is_count(name) else fold_interval(values, name=name)  # "8 – 8 patients" says nothing
    return Interval(None, None) if ci is None else Interval(*ci)


def _fold_value(fold_metrics: dict[str, Any], split: str, name: str, *, level: str | None = None) -> float | None:
    block = fold_metrics.get("metrics", {}).get(split, {})
    if level:
        block = block.get(level, {})
    value = block.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(value) if is_count(name) else value  # 8, not 8.000 patients


# ------------------------------------------------------------------------------------------------ metrics
def metrics_table(run: RunData, split: str) -> Table:
    """Per-fold values of the headline metrics on ``split``, mean ± std and the 95 % t-interval.

    A single fold has no spread across folds: its CI is then the bootstrap interval its metrics.json records.
    """
    folds = [f.index for f in run.folds]
    stats = run.summary["metrics"][split]
    single = run.folds[0].metrics.get("intervals", {}).get(split) if len(run.folds) == 1 else None
    rows = []
    for name in headline_metrics(run):
        if not _is_stats(stats.get(name)):
            continue
        values = [_fold_value(f.metrics, split, name) for f in run.folds]
        ci = _bootstrap_cell(single.get(name)) if single is not None else _interval(values, name)
        rows.append([name, *values, _mean_std(stats[name], count=is_count(name)), ci])
    note = f"std: sample standard deviation across folds. {_CI_NOTE}"
    if single is not None:
        note = ("One fold: 95 % CI is the percentile bootstrap interval over the split's images (resampled with "
                "replacement, recorded in the fold's metrics.json).")
    return Table(
        name=f"metrics-{split}",
        title=f"{split}: per fold, mean ± std, 95 % CI",
        columns=["metric", *[f"fold {k}" for k in folds], "mean ± std", "95 % CI"],
        rows=rows,
        note=note,
    )


def _bootstrap_cell(ci: list[float] | tuple[float, float] | None) -> Interval:
    return Interval(None, None) if not ci else Interval(float(ci[0]), float(ci[1]))


def summary_table(run: RunData) -> Table:
    """The headline metrics, one column per split (mean ± std) and the ensemble's test value."""
    splits = run.splits
    ensemble = run.summary.get("ensemble", {}).get("test")
    columns = ["metric", *splits, *(["ensemble test"] if ensemble else [])]
    rows = []
    for name in headline_metrics(run):
        row: list[Any] = [name, *[_mean_std(run.summary["metrics"][s].get(name)) for s in splits]]
        if ensemble:
            row.append(ensemble.get(name))
        rows.append(row)
    note = f"Mean ± std across {len(run.folds)} fold(s)."
    if "holdout" in splits:
        note += " holdout is the cross-validation estimate (every pool image is held out once)."
    return Table(name="summary", title="Headline metrics", columns=columns, rows=rows, note=note)


def ensemble_bootstrap(run: RunData) -> dict[str, tuple[float, float] | None]:
    """Bootstrap intervals of the ensemble's headline test metrics; {} without an ensemble.

    Those the run recorded (summary.json ``ensemble_intervals``) when it has them all; else computed here.
    """
    if run.ensemble is None or not run.summary.get("ensemble", {}).get("test"):
        return {}
    names = headline_metrics(run)
    recorded = (run.summary.get("ensemble_intervals") or {}).get("test") or {}
    if all(name in recorded for name in names):
        return {name: tuple(recorded[name]) if recorded[name] else None for name in names}
    return ensemble_intervals(run.ensemble, run.classes, multilabel=run.multilabel, names=names)


def ensemble_table(run: RunData, intervals: dict[str, tuple[float, float] | None]) -> Table | None:
    """The fold ensemble's test metrics with their bootstrap ``intervals`` (None without an ensemble)."""
    metrics = run.summary.get("ensemble", {}).get("test")
    if not metrics or run.ensemble is None:
        return None
    rows = []
    for name in headline_metrics(run):
        if name in metrics:
            ci = intervals.get(name)
            rows.append([name, metrics[name], Interval(*ci) if ci else Interval(None, None)])
    return Table(
        name="metrics-ensemble-test",
        title=f"Fold ensemble on test ({len(run.ensemble)} images), 95 % bootstrap CI",
        columns=["metric", "value", "95 % CI"],
        rows=rows,
        note="The mean of the fold models' test probabilities. 95 % CI: percentile bootstrap over test images "
        f"({_bootstrap_settings(run)}).",
    )


def _bootstrap_settings(run: RunData) -> str:
    points = run.summary.get("operating_points") or {}
    if "ensemble_intervals" in run.summary:
        seed = run.config.get("seed", 0)
        return f"{points.get('n_bootstrap', 1000)} resamples, seed {seed}, recorded by the run"
    return "1000 resamples, seed 0"


# --------------------------------------------------------------------------------------- operating points
_POINT_COLUMNS = (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("ppv", "PPV"), ("npv", "NPV"),
                  ("f1", "F1"))


def _point_rows(block: dict[str, dict[str, dict[str, Any]]], *, across: bool, with_class: bool) -> list[list[Any]]:
    """Rows of one operating-point table: ``{class: {point: values}}``, values a fold's (or the ensemble's)
    numbers with bootstrap ``intervals``, or (``across``) aggregate statistics with a t-interval ``ci``."""
    rows = []
    for c, points in block.items():
        for point, values in points.items():
            if across:
                cells = [_mean_std(values.get("threshold"))]
                for key, _ in _POINT_COLUMNS:
                    stats = values.get(key) or {}
                    cells += [_mean_std(stats), _bootstrap_cell(stats.get("ci"))]
            else:
                cells = [values.get("threshold")]
                for key, _ in _POINT_COLUMNS:
                    cells += [values.get(key), _bootstrap_cell((values.get("intervals") or {}).get(key))]
            rows.append([*([c] if with_class else []), point, *cells])
    return rows


def operating_point_tables(run: RunData) -> list[Table]:
    """Sensitivity, specificity, PPV, NPV and F1 at each operating point, with 95 % intervals: per split across
    folds (one fold: its own bootstrap intervals) and the fold ensemble on test. [] for runs without them."""
    points = run.summary.get("operating_points")
    if not points:
        return []
    with_class = points.get("positive_class") is None
    label = "label" if run.multilabel else "class"
    columns = [*([label] if with_class else []), "point", "threshold"]
    for _, title in _POINT_COLUMNS:
        columns += [title, f"{title} 95 % CI"]
    whose = f"positive class {points['positive_class']}" if not with_class else f"each {label} against the rest"
    chosen = ("Thresholds chosen on each fold's validation split (0.5 fixed; youden: maximal Youden's J; "
              "sensitivity_s: the highest threshold reaching sensitivity s there) and applied unchanged.")
    tables = []
    single = len(run.folds) == 1
    for split in points.get("metrics", {}):
        block = run.folds[0].metrics.get("operating_points", {}).get("splits", {}).get(split) if single else None
        rows = _point_rows(block, across=False, with_class=with_class) if block else _point_rows(
            points["metrics"][split], across=True, with_class=with_class)
        ci = ("percentile bootstrap over the split's images" if block else
              "Student-t interval of the mean across folds, clipped to [0, 1]")
        tables.append(Table(
            name=f"operating-points-{split}", rows=rows, columns=columns,
            title=f"{split}: operating points ({whose})" + ("" if block else ", mean ± std across folds"),
            note=f"{chosen} 95 % CI: {ci}; – where undefined (no positives, no positive decisions).",
        ))
    ensemble = (points.get("ensemble") or {}).get("test")
    if ensemble:
        tables.append(Table(
            name="operating-points-ensemble-test", columns=columns,
            rows=_point_rows(ensemble, across=False, with_class=with_class),
            title=f"Fold ensemble on test: operating points ({whose})",
            note=f"Thresholds: the mean over folds of each fold's validation threshold. 95 % CI: percentile "
            f"bootstrap over test images ({_bootstrap_settings(run)}); – where undefined.",
        ))
    return tables


def per_class_table(run: RunData, split: str) -> Table:
    """Per-class (per-label) metrics on ``split``, mean ± std across folds, from summary.json."""
    stats = run.summary["metrics"][split]
    kinds = [k for k in ("precision", "recall", "f1", "auc", "support", "threshold")
             if f"{k}/{run.classes[0]}" in stats]
    rows = [[c, *[_mean_std(stats.get(f"{k}/{c}"), count=is_count(k)) for k in kinds]] for c in run.classes]
    label = "label" if run.multilabel else "class"
    return Table(
        name=f"per-class-{split}",
        title=f"{split}: per {label}, mean ± std across folds",
        columns=[label, *["F1" if k == "f1" else k.upper() if k == "auc" else k for k in kinds]],
        rows=rows,
    )


def evaluation_sets(run: RunData) -> list[tuple[str, str, Predictions]]:
    """The prediction sets the pooled tables and figures describe: ``(key, label, predictions)``.

    holdout: every fold's held-out images (each pool image once: the cross-validation predictions); test:
    the fold ensemble, else the single fold's test predictions; val only when neither exists.
    """
    out: list[tuple[str, str, Predictions]] = []
    if "holdout" in run.splits:
        out.append(("holdout", "holdout, all folds pooled", run.pooled("holdout")))
    if run.ensemble is not None and len(run.ensemble):
        out.append(("test", "test, fold ensemble", run.ensemble))
    elif "test" in run.splits:
        first = run.folds[0]
        out.append(("test", f"test, fold {first.index}", first.predictions["test"]))
    if not out and "val" in run.splits:
        out.append(("val", "val, all folds pooled", run.pooled("val")))
    return [s for s in out if len(s[2])]


def classification_report_table(run: RunData, key: str, label: str, predictions: Predictions) -> Table:
    """Precision, recall, F1 and support per class, with macro and weighted averages (scikit-learn's report)."""
    classes = run.classes
    if run.multilabel:
        y_true, y_pred = predictions.truth(classes, multilabel=True), predictions.decisions(classes, multilabel=True)
        kwargs: dict[str, Any] = {}
    else:
        index = {c: i for i, c in enumerate(classes)}
        y_true = predictions.y_index(classes)
        y_pred = np.array([index[p] for p in predictions.predicted], dtype=np.int64)
        kwargs = {"labels": np.arange(len(classes))}
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0, **kwargs)
    rows: list[list[Any]] = [[c, float(p[i]), float(r[i]), float(f[i]), int(s[i])] for i, c in enumerate(classes)]
    total = int(s.sum())
    if not run.multilabel:
        rows.append(["accuracy", None, None, float((y_true == y_pred).mean()) if total else None, total])
    averages = ("micro", "macro", "weighted") if run.multilabel else ("macro", "weighted")
    for average in averages:
        ap, ar, af, _ = precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0, **kwargs)
        rows.append([f"{average} avg", float(ap), float(ar), float(af), total])
    first_total = len(classes)
    return Table(
        name=f"classification-report-{key}",
        title=f"Classification report: {label}",
        columns=["label" if run.multilabel else "class", "precision", "recall", "F1", "support"],
        rows=rows,
        emphasis=set(range(first_total, len(rows))),
        note="support: true instances. accuracy: share of images classified correctly (F1 column), as in "
        "scikit-learn's classification_report." if not run.multilabel else "support: true instances per label.",
    )


def patient_table(run: RunData, split: str, level: str = "patient") -> Table | None:
    """Patient- (or study-) level metrics on ``split`` per fold, mean ± std and 95 % CI (None when absent)."""
    stats = run.summary["metrics"].get(split, {}).get(level)
    if not isinstance(stats, dict) or not stats:
        return None
    rows = []
    for name in [m for m in PATIENT_METRICS if m in stats] + [m for m in stats if m not in PATIENT_METRICS]:
        if not _is_stats(stats[name]):
            continue
        values = [_fold_value(f.metrics, split, name, level=level) for f in run.folds]
        rows.append([name, *values, _mean_std(stats[name], count=is_count(name)), _interval(values, name)])
    return Table(
        name=f"{level}-metrics-{split}",
        title=f"{split}: {level} level, per fold, mean ± std, 95 % CI",
        columns=["metric", *[f"fold {f.index}" for f in run.folds], "mean ± std", "95 % CI"],
        rows=rows,
        note=f"A {level}'s probabilities aggregate its images' (evaluation.patient_aggregation). {_CI_NOTE}",
    )


# --------------------------------------------------------------------------------------------------- data
def counts_table(run: RunData) -> Table:
    """Images per split and class of the data as loaded (before folds were carved), with totals."""
    counts = run.data.get("counts", {})
    splits = list(counts)
    rows: list[list[Any]] = [[c, *[int(counts[s].get(c, 0)) for s in splits]] for c in run.classes]
    for row in rows:
        row.append(sum(row[1:]))
    rows.append(["total", *[sum(r[j] for r in rows) for j in range(1, len(splits) + 2)]])
    label = "label" if run.multilabel else "class"
    return Table(
        name="data-counts", title=f"Images per split and {label}", columns=[label, *splits, "total"], rows=rows,
        emphasis={len(rows) - 1},
        note="The data's own splits; the folds are carved from them (see the next table)."
        + (" Multi-label: an image counts once per label it has." if run.multilabel else ""),
    )


def fold_sizes_table(run: RunData) -> Table:
    """Images in each split of each fold."""
    parts = [p for p in ("train", "val", "holdout", "test")
             if any(p in f.metrics.get("n_images", {}) for f in run.folds)]
    rows = [[f"fold {f.index}", *[f.metrics.get("n_images", {}).get(p) for p in parts]] for f in run.folds]
    return Table(name="fold-sizes", title="Images per fold and split", columns=["fold", *parts], rows=rows)


_AUDIT_CHECKS = {"exact_duplicates": "exact duplicates", "near_duplicates": "near-duplicate pairs",
                 "patient_overlap": "patients in several splits"}
_LEAKS = ("exact", "near", "patient")


def _fact(value: Any) -> str:
    """A value of audit.json in words: numbers as in the tables, yes/no, – for none, a list by its length."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fact(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return str(len(value))
    return format_number(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _check_settings(key: str, check: dict[str, Any]) -> str:
    if key == "exact_duplicates":
        return "identical decoded pixels"
    if key == "near_duplicates":
        if check.get("enabled") is False:
            return "not searched (audit.near_duplicates: false)"
        return (f"perceptual hashes at most {_fact(check.get('max_distance'))} of 64 bits apart, thumbnails "
                f"correlated at least {_fact(check.get('min_correlation'))}, each pair on its own; "
                f"{_plural(check.get('n_images', 0), 'image')} in a pair")
    if key == "patient_overlap":
        n = check.get("n_patients")
        return "no patient ids" if n is None else f"of {_fact(n)} patients"
    return "; ".join(f"{k.replace('_', ' ')} {_fact(v)}" for k, v in check.items() if k != "count")


def audit_warning(audit: dict[str, Any]) -> Paragraph | None:
    """What a leak found by the audit means for the scores, boxed; None when nothing leaks."""
    folds = audit.get("folds")
    policy = audit.get("policy")
    if folds is None:  # an audit without folds (medclf audit): only the splits can be compared
        exact = audit.get("exact_duplicates", {}).get("across", 0)
        near = audit.get("near_duplicates", {}).get("across", 0)
        patients = audit.get("patient_overlap", {}).get("count", 0)
        if not exact and not near and not patients:
            return None
        return Paragraph(f"Across splits: {_plural(exact, 'exact duplicate')} of an image of another split, "
                         f"{_plural(near, 'near-duplicate pair')} and {_plural(patients, 'patient')} with images "
                         "in several splits. Where one side is training data and the other evaluation data, "
                         "the model is scored on images it has learnt, and the evaluation scores are inflated.",
                         "warning")
    leaking = [f for f in folds if any(f.get(k) for k in _LEAKS)]
    if not leaking:
        return None
    totals = {k: sum(f.get(k, 0) for f in folds) for k in _LEAKS}
    which = f"fold{'s' if len(leaking) > 1 else ''} {', '.join(str(f['fold']) for f in leaking)}"
    text = (f"Leakage: in {which} ({len(leaking)} of {len(folds)} folds), evaluation images duplicate the fold's "
            f"own training images ({totals['exact']} exact, {_plural(totals['near'], 'near duplicate')}) or belong "
            f"to its training patients ({_plural(totals['patient'], 'image')}). The model is scored on images it "
            "has learnt, so these folds' evaluation scores are inflated.")
    if policy == "drop_duplicates":
        dropped = sum(int(v) for v in (audit.get("dropped") or {}).values())
        text += (f" audit.leakage is drop_duplicates: {_plural(dropped, 'duplicated image')} removed from the "
                 "evaluation splits before scoring")
        if not totals["patient"]:
            return Paragraph(text + "; the scores above are free of them.", "note")
        text += ("; the images of shared patients were kept and still inflate the scores. To fix it: "
                 f"{_patient_fix(audit)}.")
    else:
        fixes = ["set audit.leakage: drop_duplicates (or fail), or remove the duplicated files"] if (
            totals["exact"] or totals["near"]) else []
        fixes += [_patient_fix(audit)] if totals["patient"] else []
        text += (f" audit.leakage is {policy or 'not recorded'}: they were scored as they are. To fix it: "
                 f"{'; '.join(fixes)}.")
    return Paragraph(text, "warning")


def _patient_fix(audit: dict[str, Any]) -> str:
    """What keeps a fold's evaluation images off its training patients, by where the shared patients come from
    (the same advice as the run's warning, medclf.data.audit.leak_remedies)."""
    if any(str(location).startswith("Fold") for location in audit.get("locations", {})):
        return "move each shared patient's images into one split of its fold folder"
    if audit.get("patient_overlap", {}).get("count"):
        return "set cv.resplit_by_patient: true (re-splits the data's own splits grouped by patient)"
    return "keep each patient in one fold (cv.grouped: true; in a manifest, one fold per patient)"


def audit_blocks(audit: dict[str, Any]) -> list[Block]:
    """The leakage audit (``audit.json``): a warning when a fold leaks, the facts, the checks, the folds."""
    blocks: list[Block] = []
    warning = audit_warning(audit)
    if warning is not None:
        blocks.append(warning)
    locations = audit.get("locations") or {}
    facts = [("images audited", _fact(audit.get("n_images"))),
             ("images per split", ", ".join(f"{k} {_fact(v)}" for k, v in locations.items()) or "–"),
             ("audit.leakage", _fact(audit.get("policy"))),
             ("audit time (s)", format_number(audit.get("timing_s"), 2))]
    blocks.append(KeyValues(facts))
    rows = []
    for key, value in audit.items():
        if not isinstance(value, dict) or "count" not in value:
            continue
        patients = key == "patient_overlap"
        count = None if patients and value.get("n_patients") is None else value.get("count")
        rows.append([_AUDIT_CHECKS.get(key, key.replace("_", " ")), count,
                     None if patients else value.get("within"), None if patients else value.get("across"),
                     _check_settings(key, value)])
    blocks.append(Table(
        name="audit", title="Duplicates and shared patients in the data", rows=rows,
        columns=["check", "count", "within a split", "across splits", "how"],
        note="count: exact duplicates: images that repeat an earlier image, within a split / across splits: "
        "where the repeat sits relative to the first image of its group; near-duplicate pairs: pairs of images "
        "that each pass the test themselves (never chained into groups), within a split / across splits: whether "
        "the two sit in one split; patients: patients with images in several splits.",
    ))
    pairs = _near_pairs_table(audit.get("near_duplicates") or {})
    if pairs is not None:
        blocks.append(pairs)
    folds = audit.get("folds")
    if folds:
        dropped = audit.get("dropped") or {}
        columns = ["fold", *_LEAKS, *(["dropped"] if dropped else [])]
        fold_rows: list[list[Any]] = [[f"fold {f['fold']}", *[f.get(k, 0) for k in _LEAKS],
                                       *([int(dropped.get(str(f["fold"]), 0))] if dropped else [])] for f in folds]
        fold_rows.append(["total", *[sum(r[j] for r in fold_rows) for j in range(1, len(columns))]])
        blocks.append(Table(
            name="audit-folds", title="Evaluation images leaking from the fold's training images", columns=columns,
            rows=fold_rows, emphasis={len(fold_rows) - 1},
            note="Per fold, its val, holdout and test images that duplicate one of its training images exactly "
            "(exact) or form a near-duplicate pair with one (near), or belong to a patient with training images "
            "(patient); counted before "
            "audit.leakage acted." + (" dropped: images removed from the evaluation splits (drop_duplicates)."
                                      if dropped else ""),
        ))
    return blocks


def _near_pairs_table(near: dict[str, Any], *, limit: int = 20) -> Table | None:
    """The near-duplicate pairs spanning two splits, as audit.json lists them (across first); None if none."""
    across = [p for p in near.get("pairs", []) if isinstance(p, dict) and p["splits"][0] != p["splits"][1]]
    if not across:
        return None
    n_across = near.get("across", len(across))
    more = f" Showing {limit} of {n_across}; all are in audit.json." if len(across) > limit else ""
    return Table(
        name="audit-near-pairs", title="Near-duplicate pairs across splits",
        columns=["image", "split", "near duplicate", "its split", "hash distance", "correlation"],
        rows=[[p["ids"][0], p["splits"][0], p["ids"][1], p["splits"][1], p["distance"], p["correlation"]]
              for p in across[:limit]],
        note="Each pair passes the test itself (hash distance and thumbnail correlation); look at the two images "
        "before trusting a count: docs/benchmarks.md gives how often a flagged pair is a real copy." + more,
    )


def skipped_table(skipped: list[dict[str, str]], *, limit: int = 50) -> Table:
    rows = [[r.get("path", ""), r.get("reason", "")] for r in skipped[:limit]]
    more = f" Showing {limit} of {len(skipped)}; all are in skipped.csv." if len(skipped) > limit else ""
    return Table(name="skipped", title=f"Skipped images ({len(skipped)})", columns=["path", "reason"], rows=rows,
                 note="Files that could not be decoded or used." + more)


# ----------------------------------------------------------------------------------- timing, environment
def timing_table(run: RunData) -> Table:
    """Epochs and seconds per fold, with a total row."""
    rows: list[list[Any]] = []
    for f in run.folds:
        m = f.metrics
        timing = m.get("timing", {})
        epochs = m.get("epochs_run") or len(f.history) or None
        train_s = timing.get("train_s")
        per_epoch = train_s / epochs if train_s is not None and epochs else None
        rows.append([f"fold {f.index}", epochs, m.get("best_epoch"), f.stopped_epoch, train_s, timing.get("eval_s"),
                     per_epoch])
    total_train = sum(r[4] or 0.0 for r in rows)
    total_eval = sum(r[5] or 0.0 for r in rows)
    total_epochs = sum(r[1] or 0 for r in rows)
    rows.append(["total", total_epochs, None, None, total_train, total_eval,
                 total_train / total_epochs if total_epochs else None])
    seconds = ("train s", "eval s", "s / epoch")
    return Table(
        name="timing", title="Training time per fold",
        columns=["fold", "epochs run", "best epoch", "early stop", *seconds], rows=rows,
        column_precision={c: 1 for c in seconds} | {"s / epoch": 2}, emphasis={len(rows) - 1},
        note="train s includes each epoch's validation; eval s is scoring the fold's splits with the kept "
        "weights. early stop: the epoch training stopped at (– when it ran every epoch).",
    )


def model_table(run: RunData) -> Table:
    model = run.summary.get("model", {})
    params = model.get("parameters") or run.folds[0].metrics.get("parameters", {})
    timing = run.summary.get("timing", {})
    rows = [
        ["architecture", model.get("architecture", run.config.get("model", {}).get("name"))],
        ["parameters", params.get("total")],
        ["trainable parameters", params.get("trainable")],
        ["model size (MB)", params.get("size_mb")],
        ["wall time of the last invocation (s)", timing.get("total_s")],
        ["data loading (s)", timing.get("data_s")],
    ]
    return Table(name="model", title="Model and total time", columns=["", "value"], rows=rows,
                 column_precision={"value": 2},
                 note="Wall time is that of the last medclf run invocation (less than the whole study after a resume).")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_table(run: RunData) -> Table:
    """Software versions and the device: as summary.json recorded them, or (older runs) this environment's."""
    recorded = run.summary.get("environment") or {}
    runtime = run.summary.get("runtime") or run.folds[0].metrics.get("runtime") or {}
    rows: list[list[Any]] = []
    if recorded:
        rows += [[name, _fact(value), "run"] for name, value in recorded.items()]
        rows += [[key.replace("_", " "), _fact(runtime[key]), "run"]
                 for key in ("precision", "channels_last") if key in runtime]
        rows.append(["medclf (this report)", __version__, "report"])
        note = ("source: run = recorded in summary.json by the run (after a resume, the invocation that finished "
                "it); report = the medclf that wrote this report.")
    else:  # runs written before summary.json recorded its environment
        here = {"python": platform.python_version(), "torch": _version("torch"), "timm": _version("timm"),
                "numpy": _version("numpy"), "scikit-learn": _version("scikit-learn")}
        rows += [[name, _fact(value), "report"] for name, value in here.items()]
        rows.append(["medclf (run)", _fact(run.run_info.get("medclf_version") or run.summary.get("medclf_version")),
                     "run"])
        rows.append(["medclf (report)", __version__, "report"])
        rows += [[key.replace("_", " "), _fact(runtime[key]), "run"]
                 for key in ("device", "device_name", "precision", "channels_last") if key in runtime]
        rows.append(["platform", platform.platform(terse=True), "report"])
        note = ("This run's summary.json predates the recorded environment: the versions (source: report) are "
                "those of the environment that wrote this report, not necessarily the run's.")
    return Table(name="environment", title="Environment", columns=["", "value", "source"], rows=rows, note=note)
