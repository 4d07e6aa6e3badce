"""Operating points and bootstrap intervals in a real run folder (summary.json, metrics.json, folds.csv, report)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from medclf import runfolder

POINT_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1")


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_binary_summary_has_the_points_with_intervals(binary_run):
    points = _summary(binary_run)["operating_points"]
    assert points["positive_class"] == "normal"
    assert points["points"] == ["0.5", "youden", "sensitivity_0.90", "sensitivity_0.95"]
    thresholds = runfolder.operating_thresholds(binary_run)
    assert set(thresholds) == {"normal"}
    assert thresholds["normal"]["0.5"] == 0.5
    for entry in points["thresholds"]:
        assert len(entry["folds"]) == 2
        defined = [t for t in entry["folds"] if t is not None]
        assert math.isclose(entry["threshold"], sum(defined) / len(defined))
    ensemble = points["ensemble"]["test"]["normal"]
    for name, threshold in thresholds["normal"].items():
        point = ensemble[name]
        assert point["threshold"] == threshold  # the mean fold threshold, applied unchanged
        assert point["tp"] + point["fp"] + point["tn"] + point["fn"] == 8  # 4 abnormal + 4 normal test images
        for metric in POINT_METRICS:
            value, ci = point[metric], point["intervals"][metric]
            if value is None:
                assert ci is None
            elif ci is not None:
                assert ci[0] - 1e-12 <= value <= ci[1] + 1e-12
    across = points["metrics"]["test"]["normal"]["youden"]["sensitivity"]
    assert len(across["folds"]) == 2 and {"mean", "std", "ci"} <= set(across)


def test_fold_metrics_choose_thresholds_on_val_and_carry_intervals(binary_run):
    metrics = json.loads((binary_run / "fold-0" / "metrics.json").read_text())
    points = metrics["operating_points"]
    youden = points["thresholds"]["normal"]["youden"]
    for split in ("val", "holdout", "test"):
        assert points["splits"][split]["normal"]["youden"]["threshold"] == youden
    for split in ("holdout", "test"):
        intervals = metrics["intervals"][split]
        assert set(intervals) >= {"accuracy", "auc_macro", "f1_macro"}
        low, high = intervals["accuracy"]
        assert low - 1e-12 <= metrics["metrics"][split]["accuracy"] <= high + 1e-12
    summary = _summary(binary_run)
    low, high = summary["ensemble_intervals"]["test"]["accuracy"]
    assert low - 1e-12 <= summary["ensemble"]["test"]["accuracy"] <= high + 1e-12


def test_folds_csv_has_the_binary_point_columns(binary_run):
    with (binary_run / "folds.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert "sensitivity@youden/normal" in rows[0] and "threshold@sensitivity_0.90/normal" in rows[0]
    ensemble = next(r for r in rows if r["fold"] == "ensemble")
    assert float(ensemble["threshold@0.5/normal"]) == 0.5


def test_multiclass_points_are_one_vs_rest_in_json_only(trained_run):
    summary = _summary(trained_run)
    points = summary["operating_points"]
    assert points["positive_class"] is None
    assert set(runfolder.operating_thresholds(trained_run)) == {"blank", "circle", "square"}
    with (trained_run / "folds.csv").open() as f:
        header = next(csv.reader(f))
    assert not any("@" in column for column in header)


def test_report_has_the_operating_point_table_and_roc_markers(binary_run):
    from medclf.reporting.run_figures import curve_panels
    from medclf.reporting.rundata import read_run

    with (binary_run / "tables" / "operating-points-ensemble-test.csv").open() as f:
        rows = list(csv.DictReader(f))
    ensemble = _summary(binary_run)["operating_points"]["ensemble"]["test"]["normal"]
    assert [r["point"] for r in rows] == list(ensemble)
    youden = next(r for r in rows if r["point"] == "youden")
    assert float(youden["threshold"]) == pytest.approx(ensemble["youden"]["threshold"])
    assert float(youden["specificity"]) == pytest.approx(ensemble["youden"]["specificity"])
    assert "specificity 95 % CI low" in youden
    assert "Operating points" in (binary_run / "report.html").read_text()
    roc, _ = curve_panels(read_run(binary_run), "test")
    markers = [s for s in roc[0].series if s.marker is not None]
    defined = {p: v for p, v in ensemble.items() if v["sensitivity"] is not None and v["specificity"] is not None}
    assert [s.label.split(" ")[0] for s in markers] == list(defined)
    for series, values in zip(markers, defined.values()):  # the ensemble's point at (1 - specificity, sensitivity)
        assert series.x[0] == pytest.approx(1 - values["specificity"]) and series.y[0] == values["sensitivity"]


def test_report_of_a_run_without_operating_points_says_so(binary_run, copy_run, cli):
    run = copy_run(binary_run)
    summary = _summary(run)
    del summary["operating_points"], summary["ensemble_intervals"]
    (run / "summary.json").write_text(json.dumps(summary))
    done = cli("report", run)
    assert done.returncode == 0, done
    assert "summary.json has no operating points" in (run / "report.html").read_text()
    assert not (run / "tables" / "operating-points-ensemble-test.csv").exists()
