"""The report's "Against its frozen features" section: the model beside the linear-probe baseline.

Read from ``summary.json``'s ``baseline`` block alone (``evaluation.baseline``; see docs/outputs.md): per split,
the model's and the probe's AUC across folds, their paired difference and the corrected resampled t-test's p.
When the model does not beat the probe on test (else holdout, else val), a boxed warning says so plainly:
a fine-tuned model that loses to its own frozen features is worth knowing about before it is used.
"""

from __future__ import annotations

from typing import Any

from medclf.reporting.page import Block, Paragraph, Section
from medclf.reporting.tables import MeanStd, Table, format_number

__all__ = ["SECTION_TITLE", "WARNING_START", "baseline_section", "baseline_warning"]

SECTION_TITLE = "Against its frozen features"
WARNING_START = "The fine-tuned model does not beat a linear probe on its own frozen features"
_IMPORTANCE = ("test", "holdout", "val")  # the split the warning speaks of: the first one the block has
_PROBE_NAMES = {"linear_probe": "a linear probe (logistic regression)"}


def _metric_label(metric: str) -> str:
    return "AUC" if metric == "auc_macro" else metric


def _stats(metrics: dict[str, Any], split: str, metric: str, fallback: Any) -> MeanStd:
    """Mean ± std of ``metric`` on ``split`` from a summary's metrics block; the paired mean when it lacks it."""
    stats = (metrics.get(split) or {}).get(metric)
    if isinstance(stats, dict):
        return MeanStd(stats.get("mean"), stats.get("std"))
    return MeanStd(fallback)


def _ordered_splits(summary: dict[str, Any], paired: dict[str, Any]) -> list[str]:
    """The paired splits in the run's order (val, holdout, test), as the report's other tables."""
    order = [s for s in summary.get("metrics", {}) if s in paired]
    return order + [s for s in paired if s not in order]


def baseline_table(summary: dict[str, Any]) -> Table:
    """One row per scored split: model and probe (mean ± std across folds), their difference, the paired p."""
    block = summary["baseline"]
    paired = block.get("paired") or {}
    splits = _ordered_splits(summary, paired)
    metric = next((paired[s].get("metric") for s in splits if paired[s].get("metric")), "auc_macro")
    label = _metric_label(metric)
    rows = []
    for split in splits:
        pair = paired[split]
        rows.append([
            split,
            _stats(summary.get("metrics", {}), split, metric, pair.get("model")),
            _stats(block.get("metrics") or {}, split, metric, pair.get("baseline")),
            pair.get("diff"),
            pair.get("p_value"),
        ])
    return Table(
        name="baseline",
        title=f"The model against a linear probe on its frozen features: {label}",
        columns=["split", f"model {label} (mean ± sd)", f"probe {label} (mean ± sd)", "difference", "p"],
        rows=rows,
        column_precision={"p": 4},
        note=(f"{metric}, mean ± sample standard deviation across folds; difference: model minus probe, "
              "fold by fold, averaged; p: the corrected resampled t-test (Nadeau and Bengio) of the paired fold "
              "values, undefined with one fold. The model beats the probe when the difference is positive and "
              "p < 0.05."),
    )


def _describe(split: str, pair: dict[str, Any]) -> str:
    label = _metric_label(str(pair.get("metric", "auc_macro")))
    p = pair.get("p_value")
    if p is None:
        test = "one fold, so no paired test"
    else:
        test = "corrected t-test p < 0.0001" if p < 1e-4 else f"corrected t-test p = {format_number(float(p), 4)}"
    return (f"{split} {label} {format_number(pair.get('model'))} against the probe's "
            f"{format_number(pair.get('baseline'))}, difference {format_number(pair.get('diff'))}, {test}")


def baseline_warning(summary: dict[str, Any]) -> Paragraph | None:
    """The boxed sentence when the model does not beat the probe on the most important split; None when it does."""
    paired = (summary.get("baseline") or {}).get("paired") or {}
    split = next((s for s in _IMPORTANCE if s in paired), None)
    if split is None or paired[split].get("beats"):
        return None
    return Paragraph(
        f"{WARNING_START} ({_describe(split, paired[split])}). On data this size the probe itself "
        "(training.recipe: linear_probe) may be the better model, in a fraction of the training time, or "
        "fine-tuning that starts from it (probe_finetune, which recipe: auto trains on up to 250 training images a "
        "fold with a pretrained backbone).",
        "warning",
    )


def baseline_section(summary: dict[str, Any]) -> Section | None:
    """The section, or None when ``summary.json`` has no ``baseline`` block (no baseline, or an older run)."""
    block = summary.get("baseline")
    if not isinstance(block, dict) or not block.get("paired"):
        return None
    kind = str(block.get("kind", "linear_probe"))
    blocks: list[Block] = []
    warning = baseline_warning(summary)
    if warning is not None:
        blocks.append(warning)
    blocks.append(Paragraph(
        f"Beside the model, each fold fitted {_PROBE_NAMES.get(kind, kind)} on the pooled features of the same "
        f"pretrained backbone, frozen, on the fold's training images (evaluation.baseline: {kind}), and scored it "
        "on the same validation, holdout and test images as the model.", "note"))
    blocks.append(baseline_table(summary))
    return Section(SECTION_TITLE, blocks)
