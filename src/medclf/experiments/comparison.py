"""A sweep's comparison: every variant's fold metrics side by side, ranked, each paired-tested against the baseline.

Built only from the variants' run folders (``fold-<k>/metrics.json`` of complete folds), so it can be rebuilt
without training.
Writes ``comparison.json`` (the schema in ``docs/sweeps.md``; the HTML report reads it), ``comparison.csv``
and ``comparison.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medclf import runfolder
from medclf.atomic import atomic_write_csv, atomic_write_json, atomic_write_text
from medclf.errors import RunFolderError
from medclf.evaluation.metrics import SUMMARY_METRICS, higher_is_better
from medclf.evaluation.statistics import corrected_resampled_ttest, t_interval, wilcoxon_signed_rank
from medclf.runfolder import fold_dir, read_json

__all__ = ["build_comparison", "metric_stats", "read_fold_results", "verdict", "write_comparison"]


def read_fold_results(run_dir: Path, folds: int | Sequence[int]) -> list[dict[str, Any]]:
    """The ``metrics.json`` of the folds ``folds`` (indices, or a count: 0 to n - 1), in order; each verified first.

    Raises:
        RunFolderError: a fold is not complete (unfinished, or a file missing, truncated or altered).
    """
    indices = list(range(folds) if isinstance(folds, int) else folds)
    states = [runfolder.check_fold(run_dir, k) for k in indices]
    missing = [s for s in states if not s.complete]
    if missing:
        why = "; ".join(f"fold {s.index}: {s.reason or 'not started'}" for s in missing)
        raise RunFolderError(f"{run_dir} has folds that are not complete ({why}); rerun the sweep to train them "
                             "(complete folds are kept).")
    return [read_json(fold_dir(run_dir, k) / "metrics.json") for k in indices]


def metric_stats(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample std, 95 % t-interval and the fold values of one metric (None and NaN left out)."""
    finite = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    interval = t_interval(finite.tolist())
    return {
        "mean": float(finite.mean()) if len(finite) else None,
        "std": float(finite.std(ddof=1)) if len(finite) > 1 else None,
        "ci_low": None if interval is None else interval[0],
        "ci_high": None if interval is None else interval[1],
        "folds": [None if v is None or math.isnan(v) else float(v) for v in values],
    }


def verdict(diff: float, p_value: float, *, metric: str, baseline: str, alpha: float) -> str:
    """Plain words for a paired test's result (a negative ``diff`` is better for a loss)."""
    better = diff > 0 if higher_is_better(metric) else diff < 0
    if p_value < alpha:
        side = "better" if better else "worse"
        return f"{side} than {baseline}: {metric} {diff:+.3f} (corrected t-test p = {p_value:.3g} < {alpha:g})"
    return (f"no significant difference from {baseline}: {metric} {diff:+.3f} could be fold-to-fold noise "
            f"(corrected t-test p = {p_value:.2g})")


def _vs_baseline(
    values: list[float | None], base: list[float | None], *, ratio: float, metric: str, baseline: str, alpha: float
) -> dict[str, Any]:
    test = corrected_resampled_ttest(values, base, test_train_ratio=ratio)
    if test is None:
        return {"diff_mean": None, "t_stat": None, "p_corrected_t": None, "p_wilcoxon": None,
                "verdict": "too few folds with a defined value to test"}
    diff, t_stat, p_t = test
    return {
        "diff_mean": diff,
        "t_stat": t_stat,
        "p_corrected_t": p_t,
        "p_wilcoxon": wilcoxon_signed_rank(values, base),
        "verdict": verdict(diff, p_t, metric=metric, baseline=baseline, alpha=alpha),
    }


def build_comparison(
    entries: list[dict[str, Any]], *, metric: str, split: str, baseline: str, alpha: float = 0.05
) -> dict[str, Any]:
    """The comparison object (``comparison.json``) from each variant's fold results.

    Args:
        entries: per variant ``{"name", "overrides", "run_dir", "folds": [fold metrics.json, ...]}``, all on
            the same folds (paired by fold index).
        metric: ranks the variants (descending; ascending for a loss) and is the paired-tested metric.
        split: whose image-level metrics are compared (``holdout``: the cross-validation estimate).
        baseline: the name of the variant the others are tested against.
        alpha: significance level of the verdicts.
    """
    by_name = {e["name"]: e for e in entries}
    if baseline not in by_name:
        raise RunFolderError(f"the baseline {baseline!r} is not among the variants: {', '.join(by_name)}.")
    variants = []
    for e in entries:
        folds = e["folds"]
        if any(split not in f["metrics"] for f in folds):
            raise RunFolderError(f"variant {e['name']!r} ({e['run_dir']}) has no {split} metrics in every fold.")
        variants.append({
            "name": e["name"],
            "overrides": e["overrides"],
            "run_dir": e["run_dir"],
            "rank": None,
            "n_folds": len(folds),
            "train_time_s": float(sum(f["timing"]["train_s"] for f in folds)),
            "parameters": folds[0]["parameters"],
            "metrics": {m: metric_stats([f["metrics"][split].get(m) for f in folds]) for m in SUMMARY_METRICS},
            "vs_baseline": None,
        })
    base = next(v for v in variants if v["name"] == baseline)
    base_folds = by_name[baseline]["folds"]
    # test/train ratio of the correction: images scored per fold over the fold's train part (the images the
    # weights were fitted on; the validation set carved from the training fold is not among them)
    n_scored = np.mean([f["n_images"][split] for f in base_folds])
    ratio = float(n_scored / np.mean([f["n_images"]["train"] for f in base_folds]))
    for v in variants:
        if v is not base:
            v["vs_baseline"] = _vs_baseline(v["metrics"][metric]["folds"], base["metrics"][metric]["folds"],
                                            ratio=ratio, metric=metric, baseline=baseline, alpha=alpha)
    worst = -math.inf if higher_is_better(metric) else math.inf
    sign = -1.0 if higher_is_better(metric) else 1.0
    order = sorted(variants, key=lambda v: sign * (v["metrics"][metric]["mean"] if v["metrics"][metric]["mean"]
                                                    is not None else worst))
    for rank, v in enumerate(order, start=1):
        v["rank"] = rank
    return {"metric": metric, "split": split, "baseline": baseline, "n_folds": len(base_folds), "alpha": alpha,
            "variants": order}


# ------------------------------------------------------------------------------------------------ writers
def _pm(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "n/a"
    text = f"{stats['mean']:.3f}" if stats["std"] is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    if stats["ci_low"] is not None:
        text += f" [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"
    return text


def _p(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def _markdown(comparison: dict[str, Any]) -> str:
    metric, split = comparison["metric"], comparison["split"]
    others = [m for m in SUMMARY_METRICS if m != metric]
    header = ["rank", "variant", f"{metric} (mean ± std [95 % CI])", *others, "train time (s)", "parameters",
              f"Δ {metric}", "p (corrected t)", "p (Wilcoxon)", "verdict"]
    lines = [
        f"# Sweep comparison: {metric} on the {split} split",
        "",
        f"{comparison['n_folds']} folds per variant, the same folds for every variant; baseline "
        f"`{comparison['baseline']}`. Each variant is tested against the baseline across folds with the corrected "
        f"resampled t-test (Nadeau and Bengio) and the Wilcoxon signed-rank test; significance level "
        f"{comparison['alpha']:g}. Every metric is shown as mean ± std [95 % CI] across folds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for v in comparison["variants"]:
        vs = v["vs_baseline"] or {}
        diff = vs.get("diff_mean")
        cells = [str(v["rank"]), f"`{v['name']}`", _pm(v["metrics"][metric]),
                 *[_pm(v["metrics"][m]) for m in others],
                 f"{v['train_time_s']:.0f}", f"{v['parameters']['total']:,}",
                 "" if diff is None else f"{diff:+.3f}", _p(vs.get("p_corrected_t")), _p(vs.get("p_wilcoxon")),
                 vs.get("verdict", "baseline")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Overrides of the base config:", ""]
    lines += [f"- `{v['name']}`: `{json.dumps(v['overrides'])}` ({v['run_dir']})" for v in comparison["variants"]]
    return "\n".join(lines) + "\n"


def _csv_rows(comparison: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    columns = ["rank", "name", "overrides", "run_dir", "n_folds", "train_time_s", "parameters_total"]
    columns += [f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std", "ci_low", "ci_high")]
    columns += ["diff_mean", "t_stat", "p_corrected_t", "p_wilcoxon", "verdict"]
    rows = []
    for v in comparison["variants"]:
        row: dict[str, Any] = {"rank": v["rank"], "name": v["name"], "overrides": json.dumps(v["overrides"]),
                               "run_dir": v["run_dir"], "n_folds": v["n_folds"], "train_time_s": v["train_time_s"],
                               "parameters_total": v["parameters"]["total"]}
        for m in SUMMARY_METRICS:
            row |= {f"{m}_{s}": v["metrics"][m][s] for s in ("mean", "std", "ci_low", "ci_high")}
        row |= v["vs_baseline"] or {"verdict": "baseline"}
        rows.append({k: ("" if val is None else val) for k, val in row.items()})
    return rows, columns


def write_comparison(sweep_dir: Path, comparison: dict[str, Any]) -> None:
    """Write ``comparison.json``, ``comparison.csv`` and ``comparison.md`` into ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    atomic_write_json(sweep_dir / "comparison.json", comparison)
    rows, columns = _csv_rows(comparison)
    atomic_write_csv(sweep_dir / "comparison.csv", rows, columns)
    atomic_write_text(sweep_dir / "comparison.md", _markdown(comparison))
