import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score

from medclf.evaluation.statistics import bootstrap_interval, t_interval


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
