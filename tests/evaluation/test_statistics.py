import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score

from medclf.evaluation.statistics import (
    bootstrap_interval,
    corrected_resampled_ttest,
    t_interval,
    wilcoxon_signed_rank,
)


def test_t_interval_matches_scipy():
    values = [0.81, 0.84, 0.79, 0.86, 0.83]
    low, high = t_interval(values)
    ref = stats.t.interval(0.95, df=4, loc=np.mean(values), scale=stats.sem(values))
    assert low == pytest.approx(ref[0]) and high == pytest.approx(ref[1])


def test_t_interval_needs_two_values_and_drops_nan():
    assert t_interval([0.9]) is None
    assert t_interval([0.9, float("nan")]) is None
    assert t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    probs = np.where(rng.random(400) < 0.8, y, 1 - y)[:, None] * np.array([[-1.0, 1.0]]) + np.array([[1.0, 0.0]])

    def acc(t, p):
        return accuracy_score(t, p.argmax(1))

    low, high = bootstrap_interval(acc, y, probs, n_resamples=300)
    point = acc(y, probs)
    assert low < point < high
    assert high - low < 0.12
    assert bootstrap_interval(acc, y, probs, n_resamples=300) == (low, high)


# ------------------------------------------------------------------------------------------- paired tests

A = [0.80, 0.85, 0.82, 0.90, 0.88]
B = [0.78, 0.80, 0.81, 0.85, 0.86]  # differences 0.02, 0.05, 0.01, 0.05, 0.02


def test_corrected_ttest_matches_a_hand_computation():
    # mean 0.03; sample variance 0.0014 / 4 = 0.00035; 5-fold: n_test/n_train = 1/4
    # corrected variance (1/5 + 1/4) * 0.00035 = 0.0001575, t = 0.03 / sqrt(0.0001575) = 2.39046
    diff, t_stat, p = corrected_resampled_ttest(A, B, test_train_ratio=1 / 4)
    assert diff == pytest.approx(0.03)
    assert t_stat == pytest.approx(0.03 / math.sqrt(0.45 * 0.00035)) and t_stat == pytest.approx(2.39046, abs=1e-5)
    assert p == pytest.approx(2 * stats.t.sf(2.390457, df=4), rel=1e-5) and p == pytest.approx(0.07518, abs=1e-4)


def test_corrected_ttest_without_correction_is_scipys_paired_ttest_and_correction_only_widens():
    _, t0, p0 = corrected_resampled_ttest(A, B, test_train_ratio=0.0)
    ref = stats.ttest_rel(A, B)
    assert t0 == pytest.approx(ref.statistic) and p0 == pytest.approx(ref.pvalue)
    _, t1, p1 = corrected_resampled_ttest(A, B, test_train_ratio=1 / 4)
    assert abs(t1) < abs(t0) and p1 > p0
    # antisymmetric: swapping the sides flips the sign, not the p-value
    d, t, p = corrected_resampled_ttest(B, A, test_train_ratio=1 / 4)
    assert d == pytest.approx(-0.03) and t == pytest.approx(-t1) and p == pytest.approx(p1)


def test_corrected_ttest_edge_cases():
    assert corrected_resampled_ttest([0.9], [0.8], test_train_ratio=0.25) is None
    assert corrected_resampled_ttest([0.9, None, float("nan")], [0.8, 0.7, 0.6], test_train_ratio=0.25) is None
    assert corrected_resampled_ttest([0.5, 0.6], [0.5, 0.6], test_train_ratio=0.25) == (0.0, 0.0, 1.0)
    diff, t, p = corrected_resampled_ttest([0.6, 0.7], [0.5, 0.6], test_train_ratio=0.25)
    assert diff == pytest.approx(0.1) and t == math.inf and p == 0.0
    with pytest.raises(ValueError, match="one value per fold on both sides, got 2 and 3"):
        corrected_resampled_ttest([0.1, 0.2], [0.1, 0.2, 0.3], test_train_ratio=0.25)


def test_wilcoxon_is_scipys_and_undefined_without_differences():
    assert wilcoxon_signed_rank(A, B) == pytest.approx(stats.wilcoxon(np.subtract(A, B)).pvalue)
    # five folds all in one direction: the exact two-sided p-value is 2 / 2**5 = 0.0625
    assert wilcoxon_signed_rank([0.9, 0.8, 0.85, 0.7, 0.95], [0.8, 0.7, 0.8, 0.65, 0.9]) == pytest.approx(0.0625)
    assert wilcoxon_signed_rank([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]) is None
    assert wilcoxon_signed_rank([0.5], [0.4]) is None
