"""The CLI's tables fit an 80-column terminal: no line wider, no cell cut to "…", every metric name whole.

Rendered with ``Console(width=80, record=True)`` on the session's real runs (three-class and binary), a
multi-label summary and a sweep comparison built here, and predict's table on the session run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import medclf.cli as cli
from medclf.cli._tables import Column, fitted_tables, under_common_folder
from medclf.evaluation import SUMMARY_METRICS
from medclf.evaluation.multilabel import MULTILABEL_SUMMARY

WIDTH = 80


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> Console:
    """The CLI's console, 80 columns wide, recording what it prints."""
    console = Console(width=WIDTH, record=True)
    monkeypatch.setattr(cli, "console", console)
    return console


def _fits(text: str) -> None:
    assert text.strip()
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    assert "…" not in text and "..." not in text, text


def _stats(mean: float) -> dict:
    return {"mean": mean, "std": 0.012, "min": mean - 0.01, "max": mean + 0.01, "folds": [mean - 0.01, mean + 0.01]}


@pytest.mark.parametrize("run", ["trained_run", "binary_run"])
def test_a_real_summary_fits_80_columns_with_every_metric_whole(run: str, request, screen: Console) -> None:
    folder = request.getfixturevalue(run)
    summary = json.loads((folder / "summary.json").read_text())
    cli.print_summary(summary, folder)
    text = screen.export_text()
    _fits(text)
    lines = text.splitlines()
    for name in SUMMARY_METRICS:  # each metric's name whole on a row of every table that shows its values
        assert sum(f"│ {name} " in line for line in lines) == text.count("┃ metric"), name
    for split in [*summary["metrics"], *[f"ensemble {s}" for s in summary["ensemble"]]]:
        assert f" {split} " in text, split  # every column is shown, its header whole
    assert lines[0].startswith(f"{summary['name']}: 2 fold(s), mean ± std")


def test_a_multilabel_summary_with_patient_rows_fits(screen: Console) -> None:
    splits = ("val", "holdout", "test")
    metrics = {s: {name: _stats(0.5) for name in MULTILABEL_SUMMARY} for s in splits}
    for s in splits:
        metrics[s]["patient"] = {"accuracy": _stats(0.7), "f1_macro": _stats(0.6), "auc_macro": None}
    summary = {"name": "chest-xray-multilabel", "task": "multilabel", "metrics": metrics,
               "ensemble": {s: {name: 0.5 for name in MULTILABEL_SUMMARY} for s in ("holdout", "test")},
               "best_epochs": [3] * 10, "timing": {"total_s": 1234.0}, "data": {},
               "folds": {"run": [0, 3], "n_folds": 10}}
    cli.print_summary(summary, Path("runs/chest-xray-multilabel"))
    text = screen.export_text()
    _fits(text)
    for name in [*MULTILABEL_SUMMARY, "patient accuracy", "patient auc_macro"]:
        assert f"│ {name} " in text, name
    assert text.startswith("chest-xray-multilabel: folds 0, 3 of 10, mean ± std")  # which folds the summary holds
    assert "(continued)" in text  # five splits do not fit beside each other: the ensemble's go on below


def test_a_sweep_comparison_fits(screen: Console) -> None:
    def variant(name: str, rank: int, mean: float, baseline: bool = False) -> dict:
        vs = None if baseline else {"diff_mean": mean - 0.8, "p_corrected_t": 0.0412, "p_wilcoxon": 0.25,
                                    "verdict": "not different from the baseline at alpha 0.05"}
        return {"name": name, "rank": rank, "train_time_s": 812.4, "vs_baseline": vs,
                "metrics": {"balanced_accuracy": {"mean": mean, "std": 0.02, "ci_low": mean - 0.03,
                                                  "ci_high": mean + 0.03}}}

    names = ["resnet18", "efficientnet_lite0", "lr=0.001,loss=focal"]
    comparison = {"metric": "balanced_accuracy", "split": "holdout", "n_folds": 5, "baseline": "resnet18",
                  "variants": [variant(names[1], 1, 0.85), variant(names[2], 2, 0.83),
                               variant(names[0], 3, 0.8, baseline=True)]}
    cli.print_comparison(comparison, Path("runs/sweep-architectures"))
    text = screen.export_text()
    _fits(text)
    for word in [*names, "mean ± std", "95 % CI", "p (t)", "p (Wilcoxon)", "train s", "0.820-0.880"]:
        assert word in text, word


def test_predict_prints_paths_under_their_folder_and_fits(trained_run: Path, tiny_splits: Path, tmp_path: Path,
                                                          screen: Console) -> None:
    done = CliRunner().invoke(cli.app, ["predict", str(trained_run), str(tiny_splits / "test"),
                                        "--out", str(tmp_path / "p.csv")])
    assert done.exit_code == 0, done.output
    text = screen.export_text()
    _fits(text)
    assert text.startswith(f"12 image(s) in {tiny_splits / 'test'}")
    for column in ("path", "predicted", "prob_blank", "prob_circle", "prob_square"):
        assert f" {column} " in text, column
    assert "│ circle/circle_3.png " in text  # the path relative to the folder named in the title


def test_image_rows_with_long_names_fit(screen: Console) -> None:
    rows = [{"path": f"/data/studies/2024/site-a/chest/patient{i:04d}/study-1/view-pa-{i}.png",
             "predicted": "pleural_effusion", "probability": 0.91, "png": f"patient{i:04d}_study-1_view-pa-{i}.png"}
            for i in range(25)]  # explain's columns; its long names wrap inside their cells
    cli._print_image_rows(rows, ", Grad-CAM of layer4", lead=("predicted",))
    text = screen.export_text()
    _fits(text)
    assert text.startswith("25 image(s) in /data/studies/2024/site-a/chest, Grad-CAM of layer4; the first 20")
    assert "│ pleural_effusion │" in text and "0.910 │" in text and " png " in text


def test_value_columns_that_do_not_fit_go_on_in_a_table_with_the_same_keys() -> None:
    console = Console(width=46, record=True)
    rows = [["f1_macro", "0.123 ± 0.004", "0.456 ± 0.007", "0.789"]]  # 1 + (8 + 3) + 2 x (13 + 3) = 44 <= 46
    tables = fitted_tables([Column("metric", "left")], [Column("val"), Column("test"), Column("ensemble")], rows,
                           width=46, console=console)
    assert [[c.header for c in t.columns] for t in tables] == [["metric", "val", "test"], ["metric", "ensemble"]]
    wide = fitted_tables([Column("metric", "left")], [Column("val"), Column("test"), Column("ensemble")], rows,
                         width=120, console=console)
    assert len(wide) == 1 and len(wide[0].columns) == 4


def test_paths_are_shown_relative_to_the_folder_they_share() -> None:
    assert under_common_folder(["/d/a/x.png", "/d/b/y.png"]) == ("/d", ["a/x.png", "b/y.png"])
    assert under_common_folder(["/d/a/x.png"]) == ("/d/a", ["x.png"])
    assert under_common_folder(["/a/x.png", "/b/y.png"]) == (None, ["/a/x.png", "/b/y.png"])
    assert under_common_folder(["rel/x.png", "/abs/y.png"]) == (None, ["rel/x.png", "/abs/y.png"])
