"""The scoring of a fold's splits into operating points and intervals, and their summary across folds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from medclf.config import EvaluationConfig
from medclf.experiments.scoring import (
    fold_spread,
    operating_point_cells,
    operating_point_columns,
    summary_operating_points,
    summary_spread,
)

EVALUATION = EvaluationConfig(operating_points={"sensitivity": [0.9], "n_bootstrap": 200})


def _binary_fold() -> tuple[SimpleNamespace, dict]:
    """Two classes; val (images 0-7) puts Youden's threshold at 0.55, test (8-11) would put it at 0.45."""
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0])
    positive = np.array([0.9, 0.8, 0.6, 0.55, 0.7, 0.3, 0.2, 0.1, 0.5, 0.45, 0.4, 0.1])
    probs = np.stack([1 - positive, positive], axis=1)
    data = SimpleNamespace(labels=labels, class_names=["abnormal", "normal"], multilabel=False)
    val, test = np.arange(8), np.arange(8, 12)
    return data, {"val": (val, probs[val]), "test": (test, probs[test])}


def test_fold_spread_chooses_on_val_and_applies_to_test():
    data, scored = _binary_fold()
    spread = fold_spread(data, scored, evaluation=EVALUATION, seed=0)
    points = spread["operating_points"]
    assert points["positive_class"] == "normal"
    assert points["thresholds"] == {"normal": {"0.5": 0.5, "youden": 0.55, "sensitivity_0.90": 0.55}}
    test = points["splits"]["test"]["normal"]["youden"]
    assert test["threshold"] == 0.55 and test["sensitivity"] == 0.0 and test["ppv"] is None
    assert set(spread["intervals"]) == {"test"}  # holdout and test get intervals; val chose the thresholds
    low, high = spread["intervals"]["test"]["accuracy"]
    assert 0.0 <= low <= 0.75 <= high <= 1.0  # test accuracy at argmax: 3 of 4


def test_fold_spread_without_val_keeps_only_the_fixed_point():
    data, scored = _binary_fold()
    spread = fold_spread(data, {"test": scored["test"]}, evaluation=EVALUATION, seed=0)
    assert spread["operating_points"]["thresholds"]["normal"] == {"0.5": 0.5, "youden": None,
                                                                   "sensitivity_0.90": None}


def _fold(thresholds: dict[str, float | None], sensitivity: float) -> dict:
    values = {"threshold": 0.5, "sensitivity": sensitivity, "specificity": 0.5, "ppv": None, "npv": 0.5, "f1": 0.5}
    return {"operating_points": {
        "thresholds": {"normal": thresholds},
        "splits": {"test": {"normal": {p: values | {"threshold": t} for p, t in thresholds.items()}}},
    }}


def test_summary_means_fold_thresholds_in_the_runfolder_format():
    results = [_fold({"0.5": 0.5, "youden": 0.4}, 0.5), _fold({"0.5": 0.5, "youden": None}, 1.0)]
    out = summary_operating_points(results, evaluation=EVALUATION, positive="normal")
    assert out["points"] == ["0.5", "youden"]
    assert out["thresholds"] == [
        {"class": "normal", "point": "0.5", "threshold": 0.5, "folds": [0.5, 0.5]},
        {"class": "normal", "point": "youden", "threshold": 0.4, "folds": [0.4, None]},
    ]
    sensitivity = out["metrics"]["test"]["normal"]["0.5"]["sensitivity"]
    assert sensitivity["mean"] == 0.75 and sensitivity["folds"] == [0.5, 1.0]
    assert sensitivity["ci"][0] == 0.0 and sensitivity["ci"][1] == 1.0  # t-interval of two folds, clipped
    assert out["metrics"]["test"]["normal"]["0.5"]["ppv"]["mean"] is None
    assert summary_operating_points([results[0], {}], evaluation=EVALUATION, positive="normal") is None


def test_summary_spread_scores_the_ensemble_at_the_mean_thresholds():
    data, scored = _binary_fold()
    folds = [fold_spread(data, scored, evaluation=EVALUATION, seed=0) for _ in range(2)]
    idx, probs = scored["test"]
    out = summary_spread(folds, data, evaluation=EVALUATION, seed=0,
                         ensemble={"y": data.labels[idx], "probs": probs})
    ensemble = out["operating_points"]["ensemble"]["test"]["normal"]
    assert ensemble["youden"]["threshold"] == 0.55 and ensemble["0.5"]["tp"] == 1
    assert out["ensemble_intervals"]["test"]["accuracy"] is not None
    assert "fold_intervals" not in out  # two folds: their spread is the t-interval
    single = summary_spread(folds[:1], data, evaluation=EVALUATION, seed=0)
    assert single["fold_intervals"] == folds[0]["intervals"]


def test_folds_csv_columns_are_binary_only():
    assert operating_point_columns(["a", "b", "c"], multilabel=False, points=["0.5"]) == []
    columns = operating_point_columns(["abnormal", "normal"], multilabel=False, points=["0.5", "youden"])
    assert columns[:2] == ["threshold@0.5/normal", "sensitivity@0.5/normal"] and len(columns) == 12
    cells = operating_point_cells({"normal": {"0.5": {"threshold": 0.5, "sensitivity": 1.0}}}, "normal")
    assert cells["sensitivity@0.5/normal"] == 1.0 and cells["f1@0.5/normal"] is None
    assert operating_point_cells(None, "normal") == {}


def test_multilabel_fold_spread_is_one_vs_rest_per_label():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (40, 3))
    probs = np.clip(0.4 * labels + 0.6 * rng.random((40, 3)), 0, 1)
    data = SimpleNamespace(labels=labels, class_names=["x", "y", "z"], multilabel=True)
    spread = fold_spread(data, {"val": (np.arange(20), probs[:20]), "test": (np.arange(20, 40), probs[20:])},
                         evaluation=EVALUATION, seed=0, thresholds=np.full(3, 0.5))
    assert spread["operating_points"]["positive_class"] is None
    assert set(spread["operating_points"]["splits"]["test"]) == {"x", "y", "z"}
    assert "exact_match" in spread["intervals"]["test"]


def _binary_set() -> SimpleNamespace:
    data, scored = _binary_fold()
    probs = np.concatenate([scored["val"][1], scored["test"][1]])
    from medclf.experiments.scoring import LEVELS

    no_units = {attribute: None for _, attribute, *_ in LEVELS}
    return SimpleNamespace(labels=data.labels, class_names=data.class_names, multilabel=False,
                           ids=[f"img{i}" for i in range(12)], **no_units), probs


def test_a_tuned_two_class_threshold_is_chosen_on_val_and_decides_every_later_split():
    """evaluation.threshold: tuned puts Youden's threshold (0.55 on val) behind accuracy, the confusion matrix and the
    predicted column of val and test; test's own best threshold (0.45) is never looked at."""
    from medclf.experiments.scoring import score_split

    data, probs = _binary_set()
    tuned = EvaluationConfig(threshold="tuned")
    val, test = np.arange(8), np.arange(8, 12)
    metrics, matrix, rows, _, thresholds = score_split(data, val, probs[val], split="val", evaluation=tuned)
    assert thresholds.tolist() == [0.55]
    assert metrics["accuracy"] == 7 / 8 and matrix == [[3, 1], [0, 4]]  # 0.6 was "normal" at 0.5 and stays so
    test_metrics, test_matrix, test_rows, _, same = score_split(data, test, probs[test], split="test",
                                                                 evaluation=tuned, thresholds=thresholds)
    assert same is thresholds
    # at 0.55 the test positives 0.5 and 0.45 are missed: 2 of 4 right
    assert test_metrics["accuracy"] == 0.5 and test_matrix == [[2, 0], [2, 0]]
    assert [r["predicted"] for r in test_rows] == ["abnormal"] * 4
    fixed, fixed_matrix, *_, fixed_threshold = score_split(data, test, probs[test], split="test",
                                                            evaluation=EvaluationConfig(threshold=0.45))
    assert fixed["accuracy"] == 1.0 and fixed_matrix == [[2, 0], [0, 2]] and fixed_threshold.tolist() == [0.45]


def test_a_tuned_threshold_is_not_chosen_on_a_split_other_than_val():
    from medclf.experiments.scoring import score_split

    data, probs = _binary_set()
    test = np.arange(8, 12)
    *_, thresholds = score_split(data, test, probs[test], split="test", evaluation=EvaluationConfig(threshold="tuned"))
    assert thresholds is None  # the most probable class, as at 0.5


def test_a_fixed_two_class_threshold_decides_the_positive_class():
    from medclf.evaluation.metrics import decide

    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])
    assert decide(probs).tolist() == [0, 1, 1]
    assert decide(probs, 0.7).tolist() == [0, 0, 1]
    assert decide(np.array([[0.5, 0.2, 0.3]]), 0.1).tolist() == [0]  # more than two classes: the most probable
