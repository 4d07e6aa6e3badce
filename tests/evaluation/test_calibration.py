import numpy as np
import pytest

from medclf.evaluation.calibration import expected_calibration_error, reliability_bins, top_label_confidence


def test_bins_are_right_closed_and_average_per_bin():
    conf = np.array([0.0, 0.1, 0.15, 0.95, 1.0])
    outcome = np.array([0, 1, 0, 1, 1])
    bins = reliability_bins(conf, outcome, n_bins=10)
    assert bins.counts.tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins.confidence[0] == pytest.approx(0.05) and bins.frequency[0] == pytest.approx(0.5)
    assert np.isnan(bins.confidence[2]) and np.isnan(bins.frequency[2])
    assert bins.frequency[9] == 1.0


def test_ece_by_hand():
    conf = np.array([0.9, 0.9, 0.9, 0.9, 0.6, 0.6])
    outcome = np.array([1, 1, 1, 0, 1, 0])
    # bin 0.8-0.9: |0.75 - 0.9| x 4; bin 0.5-0.6: |0.5 - 0.6| x 2
    assert expected_calibration_error(conf, outcome) == pytest.approx((0.15 * 4 + 0.1 * 2) / 6)
    assert np.isnan(expected_calibration_error(np.array([]), np.array([])))


def test_calibrated_predictions_have_small_ece():
    rng = np.random.default_rng(0)
    conf = rng.random(20000)
    outcome = (rng.random(20000) < conf).astype(int)
    assert expected_calibration_error(conf, outcome) < 0.02


def test_top_label_confidence():
    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
    conf, correct = top_label_confidence(np.array([0, 0, 0]), probs)
    assert conf.tolist() == [0.7, 0.6, 0.5] and correct.tolist() == [1, 0, 1]
