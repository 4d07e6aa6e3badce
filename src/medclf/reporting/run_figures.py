"""The figures of a run report (and the tables that go with them), drawn with :mod:`medclf.reporting.figures`.

Each class keeps the colour :func:`~medclf.reporting.figures.palette` gives it in every figure.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from medclf import runfolder
from medclf.errors import RunFolderError
from medclf.evaluation.calibration import expected_calibration_error, reliability_bins, top_label_confidence
from medclf.reporting.figures import (
    NEUTRAL,
    Bars,
    Figure,
    Panel,
    Series,
    bar_figure,
    heatmap_figure,
    image_grid_figure,
    line_figure,
    palette,
    sequential_colors,
    split_color,
)
from medclf.reporting.intervals import fold_interval
from medclf.reporting.page import Block, Paragraph
from medclf.reporting.run_tables import headline_metrics
from medclf.reporting.rundata import Predictions, RunData
from medclf.reporting.tables import Table

__all__ = [
    "calibration_blocks",
    "confusion_figures",
    "cooccurrence_figure",
    "curve_figures",
    "curve_panels",
    "gallery_blocks",
    "overview_figure",
    "patient_confusion_figure",
    "training_figures",
]

_KEPT = ("#1d2530", "--")  # colour and style of the kept-epoch marker
_STOP = ("#b2182b", ":")  # early stop
_GRID = np.linspace(0.0, 1.0, 201)


def _short(text: str, n: int = 14) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# ----------------------------------------------------------------------------------------------- overview
def overview_figure(run: RunData, ensemble_ci: dict[str, tuple[float, float] | None]) -> Figure:
    """Headline metrics (loss left out: another scale) per split, mean and 95 % CI; the ensemble's test value."""
    names = [m for m in headline_metrics(run) if m != "loss"]
    bars = []
    for split in run.splits:
        stats = run.summary["metrics"][split]
        cis = [fold_interval(stats[m]["folds"], name=m) if m in stats else None for m in names]
        bars.append(Bars(split, [stats.get(m, {}).get("mean") for m in names],
                         [c[0] if c else None for c in cis], [c[1] if c else None for c in cis], split_color(split)))
    ensemble = run.summary.get("ensemble", {}).get("test")
    if ensemble:
        cis = [ensemble_ci.get(m) for m in names]
        bars.append(Bars("ensemble test", [ensemble.get(m) for m in names], [c[0] if c else None for c in cis],
                         [c[1] if c else None for c in cis], split_color("ensemble")))
    return bar_figure(
        "overview-metrics", names, bars, ylabel="score", ylim=(0, 1.08), annotate=len(bars) * len(names) <= 12,
        caption="Mean across folds with 95 % t-interval per split (clipped to [0, 1]); the ensemble with its 95 % "
        "bootstrap interval.",
    )


# --------------------------------------------------------------------------------------------- confusion
def _row_normalised(matrix: np.ndarray) -> np.ndarray:
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, matrix / np.where(totals == 0, 1, totals), np.nan)


def _confusion_figure(name: str, matrix: np.ndarray, classes: list[str], title: str, caption: str) -> Figure:
    """Counts and row-normalised side by side; ``title`` leads the caption (panel titles stay short)."""
    matrix = np.asarray(matrix, dtype=float)
    labels = [_short(c) for c in classes]
    return heatmap_figure(
        name, [matrix, _row_normalised(matrix)], titles=["counts", "row-normalised"],
        row_labels=labels, col_labels=labels, formats=["d", ".2f"],
        caption=f"{title}: {caption}" if caption else title,
    )


def confusion_figures(run: RunData) -> tuple[list[Figure], list[Figure], list[Table]]:
    """Summed confusion matrices per split (+ ensemble), one per fold on the CV split, and the summed tables.

    Returns:
        ``(summed figures, per-fold figures, summed count tables)``.
    """
    classes = run.classes
    summed, tables = [], []
    for split in run.splits:
        parts = [np.asarray(f.metrics["confusion"][split])
                 for f in run.folds if split in f.metrics.get("confusion", {})]
        if not parts:
            continue
        total = np.sum(parts, axis=0)
        summed.append(_confusion_figure(f"confusion-{split}-summed", total, classes, f"{split}, folds summed",
                                        f"the {len(parts)} folds' matrices added up"))
        tables.append(_confusion_table(f"confusion-{split}-summed", f"{split}: confusion, folds summed", total,
                                       classes))
    ensemble = run.summary.get("ensemble_confusion", {}).get("test")
    if ensemble:
        matrix = np.asarray(ensemble)
        summed.append(_confusion_figure("confusion-test-ensemble", matrix, classes, "test, fold ensemble", ""))
        tables.append(_confusion_table("confusion-test-ensemble", "test: confusion of the ensemble", matrix, classes))
    cv_split = "holdout" if "holdout" in run.splits else run.splits[0] if run.splits else None
    per_fold = []
    if len(run.folds) > 1 and cv_split:
        for f in run.folds:
            if cv_split in f.metrics.get("confusion", {}):
                per_fold.append(_confusion_figure(
                    f"confusion-{cv_split}-fold-{f.index}", f.metrics["confusion"][cv_split], classes,
                    f"fold {f.index}, {cv_split}", ""))
    return summed, per_fold, tables


def _confusion_table(name: str, title: str, matrix: np.ndarray, classes: list[str]) -> Table:
    rows = [[f"true {c}", *[int(v) for v in row]] for c, row in zip(classes, matrix)]
    return Table(name=name, title=title, columns=["", *[f"pred {c}" for c in classes]], rows=rows,
                 note="Rows: true class; columns: predicted class; counts.")


def multilabel_confusion_table(run: RunData, key: str, label: str, predictions: Predictions) -> Table:
    """Per-label true/false positives and negatives of the thresholded predictions."""
    truth = predictions.truth(run.classes, multilabel=True).astype(bool)
    decided = predictions.decisions(run.classes, multilabel=True).astype(bool)
    rows = []
    for j, c in enumerate(run.classes):
        t, d = truth[:, j], decided[:, j]
        rows.append([c, int((t & d).sum()), int((~t & d).sum()), int((t & ~d).sum()), int((~t & ~d).sum())])
    return Table(name=f"confusion-{key}-per-label", title=f"{label}: per-label confusion", rows=rows,
                 columns=["label", "TP", "FP", "FN", "TN"])


def patient_confusion_figure(run: RunData, split: str) -> Figure | None:
    parts = [f.patient_predictions[split] for f in run.folds if split in f.patient_predictions]
    if not parts or run.multilabel:
        return None
    pooled = Predictions.concat(parts)
    index = {c: i for i, c in enumerate(run.classes)}
    k = len(run.classes)
    matrix = np.zeros((k, k))
    for true, pred in zip(pooled.labels, pooled.predicted):
        if true in index and pred in index:
            matrix[index[true], index[pred]] += 1
    return _confusion_figure(f"patient-confusion-{split}", matrix, run.classes, f"patients, {split}",
                             f"Patient-level predictions on {split}, all folds pooled.")


# ------------------------------------------------------------------------------------------ ROC and PR
def _curve_classes(run: RunData) -> list[int]:
    """One panel per class; a binary single-label task needs only the positive (second) class."""
    k = len(run.classes)
    return [1] if k == 2 and not run.multilabel else list(range(k))


def _defined(truth: np.ndarray) -> bool:
    return 0 < truth.sum() < len(truth)


# marker shapes and colours of the operating points on the ROC curves, in point order (0.5, youden, targets...)
_POINT_MARKERS = ("o", "D", "^", "v", "s", "P", "X")
_POINT_COLOURS = ("#1d2530", "#b2182b", "#2166ac", "#1b7837", "#762a83", "#e08214", "#4d4d4d")


def _operating_markers(run: RunData, split: str, class_name: str) -> list[Series]:
    """The operating points of ``class_name`` on ``split``'s ROC, (1 - specificity, sensitivity) each: the
    ensemble's on test when there is one, else the mean across folds (summary.json ``operating_points``)."""
    points = run.summary.get("operating_points") or {}
    ensemble = (points.get("ensemble") or {}).get("test") if split == "test" else None
    block = (ensemble or (points.get("metrics") or {}).get(split) or {}).get(class_name) or {}

    def value(values: dict[str, Any], key: str) -> float | None:
        v = values.get(key)
        return v.get("mean") if isinstance(v, dict) else v

    series = []
    for i, (point, values) in enumerate(block.items()):
        sensitivity, specificity, threshold = (value(values, k) for k in ("sensitivity", "specificity", "threshold"))
        if sensitivity is None or specificity is None or threshold is None:
            continue
        series.append(Series([1 - specificity], [sensitivity], label=f"{point} (threshold {threshold:.3f})",
                             color=_POINT_COLOURS[i % len(_POINT_COLOURS)],
                             marker=_POINT_MARKERS[i % len(_POINT_MARKERS)], width=0))
    return series


def _roc_panel(run: RunData, c: int, sets: list[tuple[str, Predictions]], ensemble: Predictions | None,
               markers: list[Series] | None = None) -> Panel:
    colour = palette(run.classes)[run.classes[c]]
    series = [Series([0, 1], [0, 1], color="#b0b0b0", width=0.8, style=":")]
    tprs, aucs = [], []
    for name, preds in sets:
        y, s = preds.truth(run.classes, multilabel=run.multilabel)[:, c], preds.probs[:, c]
        if not _defined(y):
            continue
        fpr, tpr, _ = roc_curve(y, s)
        aucs.append(roc_auc_score(y, s))
        series.append(Series(fpr, tpr, label=f"{name} (AUC {aucs[-1]:.3f})", color=colour, width=0.8, alpha=0.45))
        tprs.append(np.interp(_GRID, fpr, tpr))
    if len(tprs) > 1:
        spread = f" ± {np.std(aucs, ddof=1):.3f}"
        series.append(Series(_GRID, np.mean(tprs, axis=0), label=f"mean (AUC {np.mean(aucs):.3f}{spread})",
                             color=colour, width=2.4))
    if ensemble is not None:
        y, s = ensemble.truth(run.classes, multilabel=run.multilabel)[:, c], ensemble.probs[:, c]
        if _defined(y):
            fpr, tpr, _ = roc_curve(y, s)
            series.append(Series(fpr, tpr, label=f"ensemble (AUC {roc_auc_score(y, s):.3f})",
                                 color=split_color("ensemble"), width=1.6, style="--"))
    series += markers or []
    return Panel(f"{run.classes[c]} vs rest" if len(run.classes) > 2 or run.multilabel else run.classes[c],
                 "false positive rate", "true positive rate", series, xlim=(0, 1), ylim=(0, 1.01), square=True,
                 legend="lower right")


def _pr_panel(run: RunData, c: int, sets: list[tuple[str, Predictions]], ensemble: Predictions | None) -> Panel:
    colour = palette(run.classes)[run.classes[c]]
    series, precisions, aps, prevalence = [], [], [], []
    for name, preds in sets:
        y, s = preds.truth(run.classes, multilabel=run.multilabel)[:, c], preds.probs[:, c]
        if not _defined(y):
            continue
        precision, recall, _ = precision_recall_curve(y, s)
        aps.append(average_precision_score(y, s))
        prevalence.append(y.mean())
        series.append(Series(recall, precision, label=f"{name} (AP {aps[-1]:.3f})", color=colour, width=0.8,
                             alpha=0.45))
        precisions.append(np.interp(_GRID, recall[::-1], precision[::-1]))
    if len(precisions) > 1:
        series.append(Series(_GRID, np.mean(precisions, axis=0), color=colour, width=2.4,
                             label=f"mean (AP {np.mean(aps):.3f} ± {np.std(aps, ddof=1):.3f})"))
    if ensemble is not None:
        y, s = ensemble.truth(run.classes, multilabel=run.multilabel)[:, c], ensemble.probs[:, c]
        if _defined(y):
            precision, recall, _ = precision_recall_curve(y, s)
            series.append(Series(recall, precision, label=f"ensemble (AP {average_precision_score(y, s):.3f})",
                                 color=split_color("ensemble"), width=1.6, style="--"))
    if prevalence:
        base = float(np.mean(prevalence))
        series.insert(0, Series([0, 1], [base, base], color="#b0b0b0", width=0.8, style=":"))
    return Panel(run.classes[c], "recall", "precision", series, xlim=(0, 1), ylim=(0, 1.01), square=True,
                 legend="lower left")


def curve_panels(run: RunData, split: str) -> tuple[list[Panel], list[Panel]]:
    """The ROC and the precision-recall panels of ``split``, one per class (the positive class for two)."""
    sets = [(f"fold {f.index}", f.predictions[split]) for f in run.folds if len(f.predictions.get(split, ()))]
    ensemble = run.ensemble if split == "test" else None
    classes = _curve_classes(run)
    roc = [_roc_panel(run, c, sets, ensemble, _operating_markers(run, split, run.classes[c])) for c in classes]
    return roc, [_pr_panel(run, c, sets, ensemble) for c in classes]


def curve_figures(run: RunData) -> list[tuple[str, Figure, Figure]]:
    """ROC and precision-recall figures per split: ``[(split, roc, pr)]``; every fold thin, the mean bold."""
    out = []
    for split in [s for s in ("holdout", "test") if s in run.splits] or run.splits[:1]:
        roc_panels, pr_panels = curve_panels(run, split)
        ncols = min(3, len(roc_panels))
        ensemble = split == "test" and run.ensemble is not None
        what = "each fold thin, their mean (interpolated) bold" + (", the fold ensemble dashed" if ensemble else "")
        roc = line_figure(f"roc-{split}", roc_panels, ncols=ncols,
                          caption=f"ROC curves on {split}: {what}; AUC in the legend (mean ± std over folds)."
                          + _marked(run, split))
        pr = line_figure(f"pr-{split}", pr_panels, ncols=ncols,
                         caption=f"Precision-recall curves on {split}: {what}; average precision in the legend. "
                         "Dotted: the prevalence (a random classifier).")
        out.append((split, roc, pr))
    return out


def _marked(run: RunData, split: str) -> str:
    """The caption's sentence on the operating-point markers ("" for a run without operating points)."""
    points = run.summary.get("operating_points") or {}
    if not points:
        return ""
    whose = "the fold ensemble's" if split == "test" and (points.get("ensemble") or {}).get("test") else (
        "mean over folds")
    return f" Markers: the operating points ({whose}) at the thresholds chosen on validation, legend: threshold."


# ---------------------------------------------------------------------------------------- training curves
def _column(history: list[dict[str, Any]], name: str) -> list[float]:
    return [row.get(name, math.nan) for row in history]


def _monitored(run: RunData, columns: set[str]) -> tuple[str | None, str]:
    """The history column of the monitored metric and, when that is the loss, a metric to show beside it."""
    monitor = run.folds[0].metrics.get("monitor") or run.config.get("training", {}).get("monitor", "val_loss")
    if monitor in columns and not monitor.endswith("loss"):
        return monitor, "monitored"
    for fallback in ("val_auc_macro", "val_f1_macro", "val_accuracy", "val_exact_match"):
        if fallback in columns:
            return fallback, f"monitor: {monitor}"
    return None, ""


def _markers(fold) -> list[tuple[float, str, str, str]]:
    marks = []
    best = fold.metrics.get("best_epoch")
    if best is not None:
        marks.append((best, f"kept epoch {best}", *_KEPT))
    if fold.stopped_epoch is not None:
        marks.append((fold.stopped_epoch, f"early stop at {fold.stopped_epoch}", *_STOP))
    stages = [row.get("stage") for row in fold.history]
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            marks.append((fold.history[i]["epoch"] - 0.5, None, "#999999", "-."))
    return marks


def training_figures(run: RunData) -> list[Figure]:
    """Per fold: loss, the monitored metric and the learning rate against epoch; then every fold overlaid."""
    figures = []
    for fold in run.folds:
        h = fold.history
        if not h:
            continue
        columns = set(h[0])
        epochs = _column(h, "epoch")
        marks = _markers(fold)
        loss = [Series(epochs, _column(h, "train_loss"), "train", split_color("train"), style="--", marker="o")]
        if "val_loss" in columns:
            loss.append(Series(epochs, _column(h, "val_loss"), "validation", split_color("val"), marker="o"))
        # the legend sits above the panels: inside, it covered the kept-epoch line when that is the last epoch
        panels = [Panel("loss", "epoch", "loss", loss, vlines=marks, integer_x=True, legend="outside")]
        metric, note = _monitored(run, columns)
        if metric:
            panels.append(Panel(f"{metric} ({note})", "epoch", metric.removeprefix("val_"),
                                [Series(epochs, _column(h, metric), "validation", split_color("val"), marker="o")],
                                vlines=marks, integer_x=True, legend=None))
        if "lr" in columns:
            panels.append(Panel("learning rate", "epoch", "lr", [Series(epochs, _column(h, "lr"), None, "#555555")],
                                vlines=[m for m in marks if m[1] is None], integer_x=True, legend=None))
        stop = f", early stop at epoch {fold.stopped_epoch}" if fold.stopped_epoch is not None else ""
        if any(m[1] is None for m in marks):
            stop += "; grey dash-dot: a new training stage"
        figures.append(line_figure(
            f"training-fold-{fold.index}", panels, panel_size=3.1,
            caption=f"fold {fold.index}: kept epoch {fold.metrics.get('best_epoch')} (dashed){stop}.",
        ))
    if len(figures) > 1:
        figures.append(_all_folds_figure(run))
    return figures


def _all_folds_figure(run: RunData) -> Figure:
    colours = sequential_colors(len(run.folds))
    metric, _ = _monitored(run, set(run.folds[0].history[0]))
    loss, score = [], []
    for colour, fold in zip(colours, run.folds):
        epochs = _column(fold.history, "epoch")
        loss.append(Series(epochs, _column(fold.history, "val_loss"), f"fold {fold.index}", colour))
        if metric:
            score.append(Series(epochs, _column(fold.history, metric), f"fold {fold.index}", colour))
    panels = [Panel("validation loss, every fold", "epoch", "loss", loss, integer_x=True)]
    if score:
        panels.append(Panel(f"{metric}, every fold", "epoch", metric.removeprefix("val_"), score, integer_x=True))
    return line_figure("training-all-folds", panels, panel_size=3.4, caption="Validation curves of every fold.")


# ------------------------------------------------------------------------------------------- calibration
def _confidence(run: RunData, preds: Predictions) -> tuple[np.ndarray, np.ndarray]:
    if run.multilabel:
        return preds.probs.ravel(), preds.truth(run.classes, multilabel=True).ravel()
    return top_label_confidence(preds.y_index(run.classes), preds.probs)


def calibration_blocks(run: RunData, sets: list[tuple[str, str, Predictions]]) -> list[Block]:
    """Reliability diagrams and expected calibration error (10 equal-width bins) of the pooled sets."""
    panels, rows, bin_tables = [], [], []
    for key, label, preds in sets:
        colour = split_color("ensemble" if preds is run.ensemble else key)
        conf, outcome = _confidence(run, preds)
        bins = reliability_bins(conf, outcome)
        ece = expected_calibration_error(conf, outcome)
        filled = bins.counts > 0
        panels.append(Panel(
            f"{label}", "confidence" if not run.multilabel else "predicted probability",
            "accuracy" if not run.multilabel else "observed frequency",
            [Series([0, 1], [0, 1], "perfect calibration", "#b0b0b0", width=0.8, style=":"),
             Series(bins.confidence[filled], bins.frequency[filled], f"ECE {ece:.3f}", colour, marker="o")],
            xlim=(0, 1), ylim=(0, 1.01), square=True, legend="upper left"))
        rows.append([label, len(conf), ece, float(conf.mean()), float(outcome.mean())])
        bin_tables.append(Table(
            name=f"calibration-bins-{key}", title=f"Reliability bins: {label}",
            columns=["bin", "predictions", "mean confidence", "accuracy" if not run.multilabel else "frequency",
                     "gap"],
            rows=[[f"{lo:.1f}–{hi:.1f}", int(n), c, f, (f - c) if n else None]
                  for lo, hi, n, c, f in zip(bins.edges[:-1], bins.edges[1:], bins.counts, bins.confidence,
                                             bins.frequency)]))
    cv_split = "holdout" if "holdout" in run.splits else None
    for fold in run.folds if cv_split and len(run.folds) > 1 else []:
        preds = fold.predictions.get(cv_split)
        if preds is not None and len(preds):
            conf, outcome = _confidence(run, preds)
            rows.append([f"{cv_split}, fold {fold.index}", len(conf), expected_calibration_error(conf, outcome),
                         float(conf.mean()), float(outcome.mean())])
    what = "top-label confidence" if not run.multilabel else "every (image, label) probability"
    ece_table = Table(
        name="calibration-ece", title="Expected calibration error",
        columns=["predictions", "n", "ECE", "mean confidence", "accuracy" if not run.multilabel else "frequency"],
        rows=rows,
        note=f"ECE: count-weighted mean gap between {what} and observed accuracy over 10 equal-width bins; "
        "0 is perfectly calibrated.",
    )
    figure = line_figure("calibration", panels, ncols=min(3, len(panels)),
                         caption="Reliability diagrams: points on the dotted diagonal are calibrated; below it, "
                         "over-confident.")
    return [figure, ece_table, *bin_tables]


# ----------------------------------------------------------------------------------------------- gallery
_REWRITE = "rerun medclf run with the run's config.yaml into the run folder to write it (finished folds are kept)"


def _gallery_images(run: RunData, ids: list[str]) -> tuple[dict[str, np.ndarray], bool] | str:
    """The images of ``ids`` kept in ``gallery.npz`` and whether they carry overlays, or why they cannot be shown.

    Where the run also kept Grad-CAM overlays each image is the pair ``image | overlay`` as one RGB image
    (3, H, 2W); a gallery kept without overlays (older runs, dense-only networks) gives the images alone.
    """
    if not (run.path / runfolder.GALLERY).exists():
        return (f"The images are not shown: the run folder has no {runfolder.GALLERY} (a run written before "
                f"medclf kept the gallery's images); {_REWRITE}.")
    try:
        kept = runfolder.read_gallery(run.path)
        overlays = runfolder.read_gallery_overlays(run.path)
    except RunFolderError as error:
        return f"The images are not shown: {error}; {_REWRITE}."
    found = {i: _beside(kept[i], overlays.get(i)) for i in ids if i in kept}
    if not found:
        return (f"The images are not shown: {runfolder.GALLERY} holds none of these ids (it was altered or belongs "
                f"to another run); {_REWRITE}.")
    return found, any(i in overlays for i in found)


def _beside(image: np.ndarray, overlay: np.ndarray | None) -> np.ndarray:
    """``image`` (C, H, W) and its overlay (H, W, 3) side by side as one RGB image, or the image alone."""
    if overlay is None or overlay.shape[:2] != image.shape[-2:]:
        return image
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    return np.concatenate([rgb, np.moveaxis(overlay, -1, 0)], axis=2)


def gallery_blocks(run: RunData, *, n: int = runfolder.GALLERY_SIZE) -> list[Block]:
    """The most confidently misclassified images with true and predicted labels, and their table."""
    choice = runfolder.choose_gallery(run.classes, multilabel=run.multilabel, ensemble=run.ensemble,
                                      folds=[(f.index, f.predictions) for f in run.folds], n=n)
    if choice is None:
        return [Paragraph("No predictions to show.", "note")]
    label, preds, worst = choice.label, choice.predictions, choice.worst
    if not worst:
        return [Paragraph(f"No misclassified images among the {label}.", "note")]
    score_name = "probability of the prediction" if not run.multilabel else "largest error"
    table = Table(
        name="misclassified", title=f"Most confidently misclassified: {label}",
        columns=["#", "id", "true", "predicted", score_name, *(["probability of the true class"]
                                                              if not run.multilabel else [])],
        rows=[[r + 1, preds.ids[i], preds.labels[i], preds.predicted[i], score,
               *([float(preds.probs[i, run.classes.index(preds.labels[i])])] if not run.multilabel else [])]
              for r, (i, score) in enumerate(worst)],
    )
    kept = _gallery_images(run, [preds.ids[i] for i, _ in worst])
    if isinstance(kept, str):
        return [Paragraph(kept, "warning"), table]
    images, paired = kept
    colours = palette(run.classes)
    shown = [(i, s) for i, s in worst if preds.ids[i] in images]
    titles = [f"true {_short(preds.labels[i])}\npred {_short(preds.predicted[i])} ({s:.2f})" for i, s in shown]
    title_colours = [colours.get(preds.labels[i].split("|")[0], NEUTRAL) for i, _ in shown]
    pictures = [images[preds.ids[i]] for i, _ in shown]
    figure = image_grid_figure(
        "misclassified", pictures, titles=titles, title_colors=title_colours, ncols=3 if paired else 6,
        caption=f"{len(shown)} most confidently misclassified {label}; title colour: the true class. "
        f"Number: the {score_name}."
        + (" Each image is shown beside its Grad-CAM overlay of the predicted class (red: the regions that "
           "raised it most)." if paired else ""),
    )
    return [figure, table]


# ------------------------------------------------------------------------------------------- multi-label
def cooccurrence_figure(run: RunData) -> Figure | None:
    co = run.data.get("cooccurrence")
    if not co:
        return None
    labels = run.classes
    matrix = np.array([[co.get(a, {}).get(b, 0) for b in labels] for a in labels], dtype=float)
    short = [_short(c) for c in labels]
    return heatmap_figure("label-cooccurrence", [matrix], titles=["label co-occurrence"], row_labels=short,
                          col_labels=short, xlabel="label", ylabel="label", formats=["d"],
                          caption="Images carrying both labels (the diagonal: images carrying the label).")
