"""The comparison object: ranking, intervals, and each variant's paired test against the baseline."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from medclf.errors import RunFolderError
from medclf.experiments.comparison import build_comparison, metric_stats, verdict, write_comparison


def fold(k: int, auc: float, loss: float, train_s: float = 2.0) -> dict:
    metrics = {"accuracy": auc - 0.1, "balanced_accuracy": auc - 0.1, "precision_macro": 0.5, "recall_macro": 0.5,
               "f1_macro": 0.5, "auc_macro": auc, "loss": loss}
    return {"fold": k, "metrics": {"holdout": metrics, "val": metrics}, "timing": {"train_s": train_s},
            "n_images": {"train": 80, "val": 20, "holdout": 25, "test": 0},
            "parameters": {"total": 1000, "trainable": 1000, "size_mb": 0.004}}


BASE = [0.80, 0.82, 0.78, 0.85, 0.81]
BETTER = [0.88, 0.90, 0.86, 0.93, 0.90]
NOISY = [0.83, 0.79, 0.80, 0.84, 0.82]


def entries() -> list[dict]:
    return [
        {"name": n, "overrides": {"k": n}, "run_dir": f"runs/{n}", "folds": [fold(k, a, 1 - a) for k, a in enumerate(aucs)]}
        for n, aucs in (("base", BASE), ("noisy", NOISY), ("better", BETTER))
    ]


def test_ranked_with_paired_tests_against_the_baseline():
    c = build_comparison(entries(), metric="auc_macro", split="holdout", baseline="base")
    assert [v["name"] for v in c["variants"]] == ["better", "noisy", "base"]
    assert [v["rank"] for v in c["variants"]] == [1, 2, 3]
    assert c["n_folds"] == 5 and c["baseline"] == "base" and c["alpha"] == 0.05
    better, noisy, base = c["variants"]
    assert base["vs_baseline"] is None
    assert better["train_time_s"] == pytest.approx(10.0) and better["parameters"]["total"] == 1000
    # the ratio is holdout/train = 25/80; check the test against the formula computed here
    d = [b - a for a, b in zip(BASE, BETTER)]
    mean, var = sum(d) / 5, stats.tvar(d)
    t = mean / math.sqrt((1 / 5 + 25 / 80) * var)
    vs = better["vs_baseline"]
    assert vs["diff_mean"] == pytest.approx(mean) and vs["t_stat"] == pytest.approx(t)
    assert vs["p_corrected_t"] == pytest.approx(2 * stats.t.sf(abs(t), 4))
    assert vs["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert vs["verdict"].startswith("better than base: auc_macro +0.082")
    assert noisy["vs_baseline"]["verdict"].startswith("no significant difference from base")


def test_loss_ranks_ascending_and_lower_is_better():
    c = build_comparison(entries(), metric="loss", split="holdout", baseline="base")
    assert [v["name"] for v in c["variants"]] == ["better", "noisy", "base"]
    assert c["variants"][0]["vs_baseline"]["verdict"].startswith("better than base: loss -0.082")


def test_metric_stats_interval_and_missing_values():
    s = metric_stats([0.8, None, 0.9, float("nan"), 0.85])
    assert s["mean"] == pytest.approx(0.85) and s["std"] == pytest.approx(0.05)
    ref = stats.t.interval(0.95, df=2, loc=0.85, scale=stats.sem([0.8, 0.9, 0.85]))
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(ref)
    assert s["folds"] == [0.8, None, 0.9, None, 0.85]


def test_verdict_words():
    assert verdict(-0.05, 0.01, metric="auc_macro", baseline="ce", alpha=0.05).startswith("worse than ce")
    assert verdict(0.05, 0.2, metric="auc_macro", baseline="ce", alpha=0.05).startswith("no significant difference")
    # every loss is lower-is-better, not only the one named "loss"
    assert verdict(-0.05, 0.01, metric="hamming_loss", baseline="ce", alpha=0.05).startswith("better than ce")


def test_errors_name_the_problem():
    with pytest.raises(RunFolderError, match="the baseline 'nope' is not among the variants: base, noisy, better"):
        build_comparison(entries(), metric="auc_macro", split="holdout", baseline="nope")
    with pytest.raises(RunFolderError, match="variant 'base' .* has no test metrics in every fold"):
        build_comparison(entries(), metric="auc_macro", split="test", baseline="base")


def test_written_files(tmp_path):
    c = build_comparison(entries(), metric="auc_macro", split="holdout", baseline="base")
    write_comparison(tmp_path, c)
    assert json.loads((tmp_path / "comparison.json").read_text())["variants"][0]["name"] == "better"
    rows = (tmp_path / "comparison.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[1].startswith("1,better,")
    md = (tmp_path / "comparison.md").read_text()
    assert "| 1 | `better` | 0.894 ± 0.026 [0.862, 0.926]" in md and "| 3 | `base` |" in md and "baseline |" in md
    # every metric gets its interval, not only the ranking one (accuracy is auc - 0.1 in these folds)
    better = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert "| 0.794 ± 0.026 [0.762, 0.826] |" in better
