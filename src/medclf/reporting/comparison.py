"""The comparison report of a sweep: ``SWEEP_DIR/comparison.html`` from ``comparison.json`` and the variants'
run folders, drawn with the same blocks as the run report.

``comparison.json`` (written by the sweep) holds, per variant, its overrides, the image-level metrics of
one split across folds (mean, std, 95 % interval, fold values) and the paired test against the baseline;
each variant's ``run_dir`` is a normal run folder whose ``fold-<k>/history.csv`` gives the curves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from medclf import runfolder
from medclf.errors import RunFolderError
from medclf.evaluation.metrics import higher_is_better
from medclf.reporting.figures import Bars, Figure, Panel, Series, bar_figure, line_figure, palette
from medclf.reporting.page import KeyValues, Page, Paragraph, Section, write_page
from medclf.reporting.tables import Interval, MeanStd, Table

__all__ = ["COMPARISON_NAME", "average_ranks", "write_comparison_html"]

COMPARISON_NAME = "comparison.html"


def write_comparison_html(sweep_dir: Path) -> Path:
    """Write ``sweep_dir/comparison.html`` (with ``figures/`` and ``tables/``) from ``sweep_dir/comparison.json``.

    Raises:
        RunFolderError: ``sweep_dir`` has no readable ``comparison.json``.
    """
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / "comparison.json"
    if not path.exists():
        raise RunFolderError(f"{sweep_dir} has no comparison.json; is it a sweep folder written by medclf sweep?")
    comparison = runfolder.read_json(path, fix="rerun the same medclf sweep: finished folds are kept")
    return write_page(build_comparison(comparison, sweep_dir), sweep_dir, COMPARISON_NAME)


def average_ranks(variants: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """Each variant's mean rank over folds on ``metric`` (1 = best; ties share the mean rank).

    A fold where some variant has no value is left out.
    """
    folds = [v["metrics"].get(metric, {}).get("folds") or [] for v in variants]
    n = min((len(f) for f in folds), default=0)
    sign = -1.0 if higher_is_better(metric) else 1.0
    ranks = []
    for k in range(n):
        values = [f[k] for f in folds]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            continue
        ranks.append(rankdata([sign * v for v in values]))
    if not ranks:
        return {}
    mean = np.mean(ranks, axis=0)
    return {v["name"]: float(r) for v, r in zip(variants, mean)}


def build_comparison(comparison: dict[str, Any], sweep_dir: Path) -> Page:
    variants = comparison["variants"]
    metric, split = comparison["metric"], comparison["split"]
    colours = palette([v["name"] for v in variants])
    facts = [
        ("metric", f"{metric} on {split}"),
        ("baseline", str(comparison.get("baseline"))),
        ("variants", str(len(variants))),
        ("folds", str(comparison.get("n_folds"))),
        ("significance level", str(comparison.get("alpha"))),
        ("sweep folder", str(sweep_dir.resolve())),
    ]
    verdicts = [Paragraph(f"{v['name']}: {v['vs_baseline']['verdict']}.") for v in variants if v.get("vs_baseline")]
    overview = [KeyValues(facts), comparison_table(comparison), *verdicts, _bars(variants, metric, split, colours)]
    sections = [Section("Comparison", overview)]
    ranks = average_ranks(variants, metric)
    if len(variants) >= 3 and ranks:
        names = sorted(ranks, key=ranks.get)
        sections.append(Section("Average rank", [bar_figure(
            "average-rank", names, [Bars(None, [ranks[n] for n in names], color=[colours[n] for n in names])],
            horizontal=True, ylabel=f"mean rank over folds on {metric} (1 = best)", ylim=(0, len(variants) + 0.5),
            caption="Each fold ranks the variants on its own; the bar is the mean rank across folds.")]))
    sections.append(Section("Validation curves", _curves(variants, metric, sweep_dir, colours)))
    sections.append(Section("All metrics", [all_metrics_table(variants, split)]))
    sections.append(Section("Variant reports", [_links(variants, sweep_dir)]))
    return Page(title="medclf sweep comparison", sections=sections,
                subtitle=f"{len(variants)} variants against {comparison.get('baseline')}, {metric} on {split}")


def _overrides(overrides: dict[str, Any]) -> str:
    return "; ".join(f"{k}={v}" for k, v in overrides.items()) or "(baseline config)"


def _short_verdict(test: dict[str, Any]) -> str:
    """The verdict's headline ("no significant difference from X"); the p-values sit in their own columns."""
    if not test:
        return "baseline"
    headline = str(test.get("verdict", "")).split(":")[0]
    return headline.split(" from ")[0].split(" than ")[0]


def comparison_table(comparison: dict[str, Any]) -> Table:
    """Every variant on the sweep's metric, with the paired test against the baseline."""
    metric = comparison["metric"]
    rows = []
    for v in sorted(comparison["variants"], key=lambda v: (v.get("rank") is None, v.get("rank") or 0)):
        stats = v["metrics"].get(metric, {})
        test = v.get("vs_baseline") or {}
        params = (v.get("parameters") or {}).get("total")
        rows.append([
            v["name"], v.get("rank"), MeanStd(stats.get("mean"), stats.get("std")),
            Interval(stats.get("ci_low"), stats.get("ci_high")), test.get("diff_mean"), test.get("t_stat"),
            test.get("p_corrected_t"), test.get("p_wilcoxon"), _short_verdict(test),
            v.get("train_time_s"), params,
        ])
    return Table(
        name="comparison", title=f"Variants on {metric} ({comparison['split']})",
        columns=["variant", "rank", f"{metric} mean ± std", "95 % CI", "difference", "t",
                 "p (corrected t)", "p (Wilcoxon)", "verdict", "train s", "parameters"],
        rows=rows, column_precision={"train s": 1, "t": 2, "p (corrected t)": 4, "p (Wilcoxon)": 4},
        note=f"difference: mean paired difference to the baseline across folds; p (corrected t): the corrected "
        f"resampled t-test (Nadeau and Bengio), at alpha = {comparison.get('alpha')}. Each variant's overrides "
        "are listed under Variant reports.",
    )


def all_metrics_table(variants: list[dict[str, Any]], split: str) -> Table:
    names = [m for m in variants[0]["metrics"] if "/" not in m] if variants else []
    rows = [[v["name"], *[MeanStd(v["metrics"].get(m, {}).get("mean"), v["metrics"].get(m, {}).get("std"))
                          for m in names]] for v in variants]
    return Table(name="all-metrics", title=f"Every metric on {split}, mean ± std across folds",
                 columns=["variant", *names], rows=rows)


def _bars(variants: list[dict[str, Any]], metric: str, split: str, colours: dict[str, str]) -> Figure:
    names = [v["name"] for v in variants]
    stats = [v["metrics"].get(metric, {}) for v in variants]
    ends = [x for s in stats for x in (s.get("ci_low"), s.get("ci_high"), s.get("mean")) if x is not None]
    zoom = None
    if ends:  # variants often differ in the third decimal: from 0 the bars would all look the same
        low, high = min(ends), max(ends)
        pad = max(high - low, 1e-3) * 0.6
        zoom = (low - pad, high + pad)
    return bar_figure(
        f"bars-{metric}", names,
        [Bars(None, [s.get("mean") for s in stats], [s.get("ci_low") for s in stats],
              [s.get("ci_high") for s in stats], [colours[n] for n in names])],
        ylabel=metric, title=f"{metric} on {split}", ylim=zoom,
        caption="Mean across folds with its 95 % confidence interval. The axis is zoomed to the intervals: it "
        "does not start at 0, so bar heights exaggerate the differences; read the numbers and the tests above.",
    )


def _mean_curve(histories: list[list[dict[str, float]]], column: str) -> tuple[np.ndarray, np.ndarray, str]:
    """x (mean step, else epoch) and the mean of ``column`` over the folds that reached each epoch."""
    x_name = "step" if all(h and "step" in h[0] for h in histories) else "epoch"
    length = max(len(h) for h in histories)
    xs, ys = [], []
    for e in range(length):
        rows = [h[e] for h in histories if len(h) > e]
        xs.append(np.nanmean([r.get(x_name, math.nan) for r in rows]))
        ys.append(np.nanmean([r.get(column, math.nan) for r in rows]) if any(column in r for r in rows) else math.nan)
    return np.array(xs), np.array(ys), x_name


def _curves(variants: list[dict[str, Any]], metric: str, sweep_dir: Path, colours: dict[str, str]) -> list:
    column = f"val_{metric}"
    missing = []
    panels: dict[str, list[Series]] = {column: [], "val_loss": []}
    x_names = set()
    for v in variants:
        run_dir = sweep_dir / v["run_dir"]
        histories = [runfolder.read_history(runfolder.fold_dir(run_dir, k) / "history.csv")
                     for k in runfolder.fold_indices(run_dir)]
        histories = [h for h in histories if h]
        if not histories:
            missing.append(v["name"])
            continue
        for col, series in panels.items():
            x_name = "step" if all("step" in h[0] for h in histories) else "epoch"
            for h in histories:
                series.append(Series([r.get(x_name, math.nan) for r in h], [r.get(col, math.nan) for r in h],
                                     color=colours[v["name"]], width=0.7, alpha=0.3))
            x, y, x_name = _mean_curve(histories, col)
            x_names.add(x_name)
            series.append(Series(x, y, v["name"], colours[v["name"]], width=2.2))
    blocks: list = []
    if any(panels.values()):
        x_label = "optimizer steps" if x_names == {"step"} else "epoch"
        shown = [Panel(f"validation {c.removeprefix('val_')}", x_label, c.removeprefix("val_"), s)
                 for c, s in panels.items() if s and not all(np.isnan(np.asarray(x.y, float)).all() for x in s)]
        if shown:
            blocks.append(line_figure("validation-curves", shown, panel_size=4.0,
                                      caption="Each variant's mean validation curve (bold) over its folds (thin), "
                                      f"against {x_label}."))
    if missing:
        blocks.append(Paragraph(f"No history.csv found for: {', '.join(missing)}.", "warning"))
    return blocks


def _links(variants: list[dict[str, Any]], sweep_dir: Path) -> Table:
    rows = []
    for v in variants:
        report = sweep_dir / v["run_dir"] / "report.html"
        rows.append([v["name"], _overrides(v.get("overrides", {})), v["run_dir"],
                     "report.html" if report.exists() else "not written"])
    return Table(name="variant-runs", title="Variants: overrides and run folders",
                 columns=["variant", "overrides", "run folder", "report"], rows=rows,
                 note="Run folders are relative to the sweep folder; each is an ordinary run folder, and "
                 "medclf report on it writes its report.html.")
