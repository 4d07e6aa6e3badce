"""write_comparison_html on a sweep folder fabricated from tiny real run folders."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medclf.config import parse_config
from medclf.errors import RunFolderError
from medclf.experiments import run_study
from medclf.reporting import write_comparison_html
from medclf.reporting.comparison import average_ranks


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A real 2-fold, 1-epoch study on 16x16 generated images (a few seconds)."""
    root = tmp_path_factory.mktemp("tinyrun")
    rng = np.random.default_rng(0)

    def images(n):
        y = np.arange(n) % 2
        x = rng.integers(0, 60, (n, 16, 16)).astype(np.uint8)
        x[y == 1, 4:12, 4:12] = 220
        return x, y

    (tr_x, tr_y), (te_x, te_y) = images(32), images(12)
    np.savez(root / "tiny.npz", train_images=tr_x, train_labels=tr_y, test_images=te_x, test_labels=te_y)
    config = parse_config({
        "name": "tiny", "data": {"source": {"type": "npz", "path": str(root / "tiny.npz"), "class_names": ["a", "b"]},
                                 "image_size": 16, "cache_dir": str(root / "cache")},
        "model": {"name": "test_resnet"}, "training": {"epochs": 1, "batch_size": 8, "device": "cpu"},
        "cv": {"n_folds": 2, "val_fraction": 0.25},
    })
    run_study(config, root / "run")
    return root / "run"


def _with_history(run: Path, shift: float, *, step: bool) -> None:
    """Give each fold a 3-epoch history (a 1-epoch run has no curve to speak of)."""
    for fold in run.glob("fold-*"):
        with open(fold / "history.csv", newline="") as handle:
            first = next(csv.DictReader(handle))
        rows = []
        for epoch in (1, 2, 3):
            row = dict(first) | {"epoch": epoch, "val_auc_macro": 0.6 + 0.1 * epoch + shift,
                                 "val_loss": 1.0 / epoch + shift}
            if step:
                row["step"] = 4 * epoch
            else:  # as in runs written before history.csv had a step column
                row.pop("step", None)
            rows.append(row)
        with open(fold / "history.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _variant(name, folds, rank, baseline=False):
    mean = float(np.mean(folds))
    return {
        "name": name, "overrides": {} if baseline else {"training.optimizer.lr": 0.01}, "run_dir": f"runs/{name}",
        "rank": rank, "n_folds": len(folds), "train_time_s": 12.5, "parameters": {"total": 1000, "trainable": 1000, "size_mb": 0.1},
        "metrics": {"auc_macro": {"mean": mean, "std": float(np.std(folds, ddof=1)), "ci_low": mean - 0.05,
                                  "ci_high": mean + 0.05, "folds": folds},
                    "accuracy": {"mean": 0.7, "std": 0.01, "ci_low": 0.6, "ci_high": 0.8, "folds": [0.69, 0.71]}},
        "vs_baseline": None if baseline else {"diff_mean": mean - 0.8, "t_stat": 1.5, "p_corrected_t": 0.0412,
                                              "p_wilcoxon": None, "verdict": "better than the baseline"},
    }


def _sweep(tiny_run: Path, root: Path, variants: list[dict], *, step: bool = True) -> Path:
    for i, v in enumerate(variants):
        shutil.copytree(tiny_run, root / v["run_dir"])
        _with_history(root / v["run_dir"], 0.02 * i, step=step)
    (root / "comparison.json").write_text(json.dumps({
        "metric": "auc_macro", "split": "holdout", "baseline": variants[0]["name"], "n_folds": 2, "alpha": 0.05,
        "variants": variants}))
    return root


def test_comparison_report_has_table_bars_ranks_and_curves(tiny_run: Path, tmp_path: Path):
    variants = [_variant("baseline", [0.80, 0.82], 3, baseline=True), _variant("lr-0.01", [0.90, 0.88], 1),
                _variant("lr-0.1", [0.85, 0.84], 2)]
    sweep = _sweep(tiny_run, tmp_path, variants)
    path = write_comparison_html(sweep)
    assert path == sweep / "comparison.html"
    html = path.read_text()
    for heading in ("Comparison", "Average rank", "Validation curves", "All metrics", "Variant reports"):
        assert f"<h2>{heading}</h2>" in html
    assert {p.name for p in (sweep / "figures").glob("*.png")} == {"bars-auc_macro.png", "average-rank.png",
                                                                   "validation-curves.png"}
    with open(sweep / "tables" / "comparison.csv", newline="") as handle:
        rows = {r["variant"]: r for r in csv.DictReader(handle)}
    assert list(rows) == ["lr-0.01", "lr-0.1", "baseline"]  # by rank
    assert float(rows["lr-0.01"]["auc_macro mean ± std mean"]) == pytest.approx(0.89)
    assert float(rows["lr-0.01"]["p (corrected t)"]) == 0.0412 and rows["lr-0.01"]["p (Wilcoxon)"] == ""
    with open(sweep / "tables" / "variant-runs.csv", newline="") as handle:
        runs = {r["variant"]: r for r in csv.DictReader(handle)}
    assert runs["lr-0.01"]["overrides"] == "training.optimizer.lr=0.01"
    assert '<td class="num">0.0412</td>' in html and "better than the baseline" in html
    assert "optimizer steps" in html  # curves against the step column
    assert "<script" not in html


def test_two_variants_have_no_rank_chart_and_curves_fall_back_to_epochs(tiny_run: Path, tmp_path: Path):
    variants = [_variant("baseline", [0.80, 0.82], 2, baseline=True), _variant("other", [0.90, 0.88], 1)]
    sweep = _sweep(tiny_run, tmp_path, variants, step=False)
    html = write_comparison_html(sweep).read_text()
    assert "Average rank" not in html and not (sweep / "figures" / "average-rank.png").exists()
    assert "against epoch" in html


def test_average_ranks_and_missing_comparison(tmp_path: Path):
    variants = [_variant("a", [0.8, 0.9], 1), _variant("b", [0.9, 0.8], 2), _variant("c", [0.7, 0.7], 3)]
    assert average_ranks(variants, "auc_macro") == {"a": 1.5, "b": 1.5, "c": 3.0}
    for v, loss in zip(variants, ([0.2, 0.3], [0.1, 0.4], [0.5, 0.5])):
        v["metrics"]["loss"] = {"folds": loss}
    assert average_ranks(variants, "loss") == {"a": 1.5, "b": 1.5, "c": 3.0}  # lower is better
    with pytest.raises(RunFolderError, match="has no comparison.json"):
        write_comparison_html(tmp_path)


def test_cli_report_writes_the_comparison_of_a_sweep_folder(tiny_run: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from medclf.cli import app

    sweep = _sweep(tiny_run, tmp_path, [_variant("baseline", [0.8, 0.82], 1, baseline=True)])
    result = CliRunner().invoke(app, ["report", str(sweep)])
    assert result.exit_code == 0, result.output
    assert (sweep / "comparison.html").exists() and "comparison.html" in result.output
    help_text = CliRunner().invoke(app, ["report", "--help"]).output
    assert "Example: medclf report" in help_text
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
