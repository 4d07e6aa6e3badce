"""evaluation.threshold: tuned on a two-class study: each fold's threshold comes from its validation split and
reaches metrics.json, model.json, the ensemble and medclf predict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from medclf.inference.predict import decision_threshold, predict_inputs
from tiny_data import tiny_study


def test_a_tuned_threshold_is_recorded_per_fold_and_decides_the_ensemble_and_predict(binary_splits: Path,
                                                                                       tmp_path: Path, monkeypatch,
                                                                                       train):
    run = train(tiny_study(binary_splits, tmp_path / "cache", training={"epochs": 1},
                           evaluation={"threshold": "tuned"}), tmp_path, report=False)
    chosen = []
    for k in (0, 1):
        metrics = json.loads((run / f"fold-{k}" / "metrics.json").read_text())
        spec = json.loads((run / f"fold-{k}" / "model.json").read_text())
        assert set(metrics["thresholds"]) == {"normal"}  # the positive class only
        assert spec["decision_threshold"] == metrics["thresholds"]["normal"]
        # the val split's own Youden threshold: the one its operating points report
        assert spec["decision_threshold"] == metrics["operating_points"]["thresholds"]["normal"]["youden"]
        chosen.append(spec["decision_threshold"])
    mean = float(np.mean(chosen))
    with (run / "ensemble" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and [r["predicted"] for r in rows] == [
        "normal" if float(r["prob_normal"]) >= mean else "abnormal" for r in rows]
    assert decision_threshold([{"decision_threshold": t} for t in chosen]) == mean

    images = [binary_splits / "test"]
    predicted = predict_inputs(run, images).rows
    assert [r["predicted"] for r in predicted] == [
        "normal" if r["prob_normal"] >= mean else "abnormal" for r in predicted]
    # a threshold no probability reaches: predict decides by the run's threshold, not the likelier class
    monkeypatch.setattr("medclf.inference.predict.decision_threshold", lambda specs: 1.5)
    assert {r["predicted"] for r in predict_inputs(run, images).rows} == {"abnormal"}


def test_a_fold_without_a_threshold_leaves_the_likelier_class():
    assert decision_threshold([{"decision_threshold": 0.3}, {"decision_threshold": None}]) is None
    assert decision_threshold([{}]) is None
