"""The run report: ``RUN_DIR/report.html`` with its figures and tables, rebuilt from the run folder alone.

Only the gallery of misclassified images reads more: the images themselves, through the run's config and
the decode cache (when the data has gone, the gallery says so and the rest of the report is unaffected).
"""

from __future__ import annotations

from pathlib import Path

from medclf.reporting.baseline import baseline_section
from medclf.reporting.page import Grid, KeyValues, Page, Paragraph, Preformatted, Section, write_page
from medclf.reporting.run_figures import (
    calibration_blocks,
    confusion_figures,
    cooccurrence_figure,
    curve_figures,
    gallery_blocks,
    multilabel_confusion_table,
    overview_figure,
    patient_confusion_figure,
    training_figures,
)
from medclf.reporting.run_tables import (
    audit_blocks,
    classification_report_table,
    counts_table,
    ensemble_bootstrap,
    ensemble_table,
    environment_table,
    evaluation_sets,
    fold_sizes_table,
    metrics_table,
    model_table,
    operating_point_tables,
    patient_table,
    per_class_table,
    skipped_table,
    summary_table,
    timing_table,
)
from medclf.reporting.rundata import RunData, read_run

__all__ = ["REPORT_NAME", "build_report", "write_report"]

REPORT_NAME = "report.html"


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html``, ``run_dir/figures/*.png`` and ``run_dir/tables/*.{csv,md}``.

    Args:
        run_dir: a finished run folder (``medclf run`` wrote its ``summary.json``).

    Returns:
        The path of ``report.html``.

    Raises:
        RunFolderError: ``run_dir`` is not a finished run folder.
    """
    run = read_run(Path(run_dir))
    return write_page(build_report(run), run.path, REPORT_NAME)


def build_report(run: RunData) -> Page:
    """The report page of a run, section by section."""
    sets = evaluation_sets(run)
    bootstrap = ensemble_bootstrap(run)
    baseline = baseline_section(run.summary)  # None without summary.json's "baseline" block
    sections = [
        _overview(run, bootstrap),
        _data(run),
        _metrics(run, bootstrap),
        *([baseline] if baseline is not None else []),
        Section("Operating points", operating_point_tables(run) or [Paragraph(
            "summary.json has no operating points (a run written before they existed).", "note")]),
        _classification(run, sets),
        _confusion(run, sets),
        _curves(run),
        _training(run),
        Section("Calibration", calibration_blocks(run, sets) if sets else [Paragraph("No predictions.", "note")]),
        Section("Misclassified images", gallery_blocks(run)),
    ]
    patient = _patient(run)
    if patient is not None:
        sections.append(patient)
    if run.multilabel:
        sections.append(_multilabel(run))
    sections += [
        Section("Timing and model", [timing_table(run), model_table(run)]),
        Section("Configuration", [Paragraph("The resolved config.yaml of the run: every default written out. "
                                            "medclf run on this file repeats the study.", "note"),
                                  Preformatted(run.config_text)]),
        Section("Environment", [environment_table(run)]),
    ]
    n = (run.summary.get("folds") or {}).get("n_folds") or len(run.folds)  # cv.folds may have run fewer
    mode = run.config.get("cv", {}).get("mode", "kfold")
    subtitle = f"{n}-fold cross-validation" if mode == "kfold" and n > 1 else "holdout (one fold)"
    subtitle += f" of {run.summary.get('model', {}).get('architecture', '?')} on {run.data.get('n_images')} images"
    return Page(title=f"medclf report: {run.summary.get('name', run.path.name)}", subtitle=subtitle,
                sections=sections)


def _overview(run: RunData, bootstrap: dict) -> Section:
    classes = run.classes
    facts = [
        ("run folder", str(run.path.resolve())),
        ("task", "multi-label" if run.multilabel else f"single-label, {len(classes)} classes"),
        ("classes" if not run.multilabel else "labels", ", ".join(classes)),
        *_positive_class(run),
        ("model", str(run.summary.get("model", {}).get("architecture"))),
        ("folds", _folds_run(run)),
        ("monitor", str(run.folds[0].metrics.get("monitor"))),
        ("config fingerprint", str(run.summary.get("config_fingerprint"))),
    ]
    blocks = [KeyValues(facts), summary_table(run)]
    if run.splits:
        blocks.append(overview_figure(run, bootstrap))
    return Section("Overview", blocks)


def _folds_run(run: RunData) -> str:
    """"2 complete", or "folds 0, 3 of 10" when cv.folds (--folds) ran a subset of the study's folds."""
    n_folds = (run.summary.get("folds") or {}).get("n_folds")
    if n_folds is None or len(run.folds) >= n_folds:
        return f"{len(run.folds)} complete"
    return f"folds {', '.join(str(f.index) for f in run.folds)} of {n_folds} (cv.folds)"


def _positive_class(run: RunData) -> list[tuple[str, str]]:
    """The overview's "positive class" row of a two-class single-label run (none otherwise).

    Runs written before data.json recorded it had their second class as the positive one, as now.
    """
    if run.multilabel or len(run.classes) != 2:
        return []
    name = run.data.get("positive_class") or run.classes[1]
    role = "the positive class of the AUC, the ROC and PR curves and the operating points; data.positive_class"
    return [("positive class", f"{name} ({role})")]


def _data(run: RunData) -> Section:
    d = run.data
    facts = [
        ("images", str(d.get("n_images"))),
        ("image shape (C, H, W)", " × ".join(str(v) for v in d.get("image_shape", []))),
        ("patients", "no patient ids" if d.get("n_patients") is None else str(d["n_patients"])),
        ("byte-identical copies", str(d.get("duplicates", {}).get("count", 0))),
        ("data fingerprint", str(d.get("fingerprint"))),
    ]
    subsections = []
    if run.audit is not None:
        subsections.append(Section("Leakage audit", audit_blocks(run.audit)))
    if run.skipped:
        subsections.append(Section("Skipped images", [skipped_table(run.skipped)]))
    return Section("Data", [KeyValues(facts), counts_table(run), fold_sizes_table(run)], subsections)


def _metrics(run: RunData, bootstrap: dict) -> Section:
    blocks = [metrics_table(run, split) for split in run.splits]
    ensemble = ensemble_table(run, bootstrap)
    if ensemble is not None:
        blocks.append(ensemble)
    if not blocks:
        blocks = [Paragraph("No split was scored in every fold.", "note")]
    return Section("Metrics", blocks)


def _classification(run: RunData, sets) -> Section:
    blocks = [classification_report_table(run, key, label, preds) for key, label, preds in sets]
    blocks += [per_class_table(run, split) for split in run.splits]
    return Section("Classification report", blocks)


def _confusion(run: RunData, sets) -> Section:
    if run.multilabel:
        return Section("Confusion matrices", [multilabel_confusion_table(run, k, lbl, p) for k, lbl, p in sets])
    summed, per_fold, tables = confusion_figures(run)
    subsections = [Section("Summed over folds", [Grid(summed, wide=True), *tables], anchor="confusion-summed")]
    if per_fold:
        subsections.append(Section("Per fold", [Grid(per_fold, wide=True)], anchor="confusion-per-fold"))
    return Section("Confusion matrices", [], subsections)


def _curves(run: RunData) -> Section:
    one_panel = len(run.classes) == 2 and not run.multilabel  # side by side; several panels need the width
    subsections = [Section(split, [Grid([roc, pr], wide=True)] if one_panel else [roc, pr], anchor=f"curves-{split}")
                   for split, roc, pr in curve_figures(run)]
    return Section("ROC and precision-recall curves", [], subsections)


def _training(run: RunData) -> Section:
    figures = training_figures(run)
    if not figures:
        return Section("Training curves", [Paragraph("No history.csv in the fold folders.", "note")])
    return Section("Training curves", [Paragraph(
        "Per fold: training and validation loss, the monitored validation metric and the learning rate per "
        "epoch. Dashed: the epoch whose weights were kept; dotted red: where early stopping ended training.",
        "note"), *figures])


def _patient(run: RunData) -> Section | None:
    blocks = []
    for level in ("patient", "study"):
        for split in run.splits:
            table = patient_table(run, split, level)
            if table is not None:
                blocks.append(table)
    figures = [f for f in (patient_confusion_figure(run, s) for s in ("holdout", "val")) if f is not None]
    if not blocks and not figures:
        return None
    return Section("Patient level", [*blocks, *([Grid(figures, wide=True)] if figures else [])])


def _multilabel(run: RunData) -> Section:
    figure = cooccurrence_figure(run)
    blocks = [figure] if figure is not None else [Paragraph("data.json has no label co-occurrence.", "note")]
    return Section("Multi-label", blocks)
