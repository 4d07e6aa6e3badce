"""Operating points: thresholds chosen on validation, applied unchanged, each value with a bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from medclf.evaluation.operating_points import (
    POINT_METRICS,
    apply_points,
    choose_thresholds,
    one_vs_rest,
    point_names,
    point_rates,
)

# validation: positives 0.9 0.8 0.6 0.55, negatives 0.7 0.3 0.2 0.1
VAL_TRUTH = np.array([1, 1, 1, 1, 0, 0, 0, 0])
VAL_SCORES = np.array([0.9, 0.8, 0.6, 0.55, 0.7, 0.3, 0.2, 0.1])


def test_point_names_follow_the_targets():
    assert point_names([0.9, 0.95]) == ["0.5", "youden", "sensitivity_0.90", "sensitivity_0.95"]


def test_youden_and_sensitivity_thresholds_by_hand():
    chosen = choose_thresholds(VAL_TRUTH, VAL_SCORES, sensitivities=[0.5, 0.75, 0.9])
    # J at 0.8: 2/4 - 0 = 0.5; at 0.6: 3/4 - 1/4 = 0.5; at 0.55: 4/4 - 1/4 = 0.75 (the maximum)
    assert chosen["youden"] == 0.55
    # the k-th highest positive score reaches k/4: 0.5 -> 2nd (0.8), 0.75 -> 3rd (0.6), 0.9 -> 4th (0.55)
    assert chosen["sensitivity_0.50"] == 0.8
    assert chosen["sensitivity_0.75"] == 0.6
    assert chosen["sensitivity_0.90"] == 0.55
    assert chosen["0.5"] == 0.5
    for name in ("sensitivity_0.50", "sensitivity_0.75", "sensitivity_0.90"):
        target = float(name.split("_")[1])
        reached = point_rates(VAL_TRUTH, VAL_SCORES, chosen[name])["sensitivity"]
        assert reached >= target
        higher = np.nextafter(chosen[name], 1.0)  # any higher threshold falls short: it is the highest
        assert point_rates(VAL_TRUTH, VAL_SCORES, higher)["sensitivity"] < target


def test_a_threshold_is_chosen_on_validation_and_applied_unchanged_to_test():
    chosen = {"pos": choose_thresholds(VAL_TRUTH, VAL_SCORES, sensitivities=[0.9])}
    test_truth = np.array([[1], [1], [0], [0]])
    test_scores = np.array([[0.5], [0.45], [0.4], [0.1]])  # test's own best threshold would be 0.45
    assert choose_thresholds(test_truth[:, 0], test_scores[:, 0], sensitivities=[])["youden"] == 0.45
    out = apply_points(test_truth, test_scores, chosen, ["pos"], n_resamples=200)
    youden = out["pos"]["youden"]
    assert youden["threshold"] == 0.55  # validation's, not test's
    assert (youden["tp"], youden["fp"], youden["tn"], youden["fn"]) == (0, 0, 2, 2)
    assert youden["sensitivity"] == 0.0 and youden["specificity"] == 1.0
    assert youden["ppv"] is None and youden["intervals"]["ppv"] is None  # no positive decision: undefined
    assert youden["npv"] == 0.5 and youden["f1"] == 0.0
    at_half = out["pos"]["0.5"]
    assert (at_half["tp"], at_half["fp"], at_half["tn"], at_half["fn"]) == (1, 0, 2, 1)
    assert at_half["ppv"] == 1.0 and at_half["sensitivity"] == 0.5


def test_an_all_negative_split_gives_nulls_not_a_crash():
    chosen = {"pos": choose_thresholds(np.zeros(5, dtype=int), np.linspace(0, 1, 5), sensitivities=[0.9])}
    assert chosen["pos"]["youden"] is None and chosen["pos"]["sensitivity_0.90"] is None  # no positives on val
    out = apply_points(np.zeros((5, 1), dtype=int), np.linspace(0, 1, 5)[:, None], chosen, ["pos"], n_resamples=100)
    assert out["pos"]["youden"]["threshold"] is None and out["pos"]["youden"]["sensitivity"] is None
    half = out["pos"]["0.5"]
    assert half["sensitivity"] is None and half["intervals"]["sensitivity"] is None
    assert half["specificity"] == 0.4 and half["intervals"]["specificity"] is not None
    empty = apply_points(np.zeros((0, 1), dtype=int), np.zeros((0, 1)), chosen, ["pos"])
    assert empty["pos"]["0.5"]["specificity"] is None and empty["pos"]["0.5"]["tp"] == 0


def _noisy(n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    return truth, np.clip(0.35 * truth + 0.65 * rng.random(n), 0, 1)


def test_intervals_contain_the_estimate_and_repeat_with_the_seed():
    truth, scores = _noisy()
    chosen = {"pos": choose_thresholds(truth, scores, sensitivities=[0.9, 0.95])}
    first = apply_points(truth[:, None], scores[:, None], chosen, ["pos"], n_resamples=300, seed=3)
    again = apply_points(truth[:, None], scores[:, None], chosen, ["pos"], n_resamples=300, seed=3)
    other = apply_points(truth[:, None], scores[:, None], chosen, ["pos"], n_resamples=300, seed=4)
    assert first == again
    assert first != other
    for point in point_names([0.9, 0.95]):
        values = first["pos"][point]
        for metric in POINT_METRICS:
            low, high = values["intervals"][metric]
            assert low <= values[metric] <= high
            assert high - low < 0.25  # 400 images: a few points wide, not the whole unit interval


def test_bootstrap_matches_a_plain_loop_of_resamples():
    truth, scores = _noisy(60, seed=2)
    out = apply_points(truth[:, None], scores[:, None], {"pos": {"0.5": 0.5}}, ["pos"], n_resamples=500, seed=0)
    rng = np.random.default_rng(0)
    drawn = rng.integers(0, 60, size=(500, 60))
    sens = [point_rates(truth[d], scores[d], 0.5)["sensitivity"] for d in drawn]
    expected = np.quantile([s for s in sens if s is not None], [0.025, 0.975])
    assert out["pos"]["0.5"]["intervals"]["sensitivity"] == pytest.approx(list(expected))


def test_one_vs_rest_binary_multiclass_and_multilabel():
    probs = np.array([[0.2, 0.8], [0.7, 0.3]])
    names, truth, scores = one_vs_rest(np.array([1, 0]), probs, ["abnormal", "normal"], multilabel=False)
    assert names == ["normal"] and truth.tolist() == [[1], [0]] and scores.tolist() == [[0.8], [0.3]]
    names, truth, _ = one_vs_rest(np.array([2, 0]), np.full((2, 3), 1 / 3), ["a", "b", "c"], multilabel=False)
    assert names == ["a", "b", "c"] and truth.tolist() == [[0, 0, 1], [1, 0, 0]]
    names, truth, _ = one_vs_rest(np.array([[1, 0], [1, 1]]), np.full((2, 2), 0.5), ["x", "y"], multilabel=True)
    assert names == ["x", "y"] and truth.tolist() == [[1, 0], [1, 1]]
