"""The vectorised bootstrap gives the loop's intervals: the same resamples, the same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from medclf.evaluation.fast_metrics import FAST_METRICS, fast_metrics, metric_intervals, resample_weights
from medclf.evaluation.statistics import bootstrap_intervals


@pytest.mark.parametrize(("k", "n"), [(2, 30), (3, 45)])
def test_vectorised_intervals_equal_the_loop_of_fast_metrics(k, n):
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    probs[:6] = probs[0]  # tied scores count one half in the AUC
    vectorised = metric_intervals(y, probs, n_resamples=200, seed=5)
    loop = bootstrap_intervals(fast_metrics, FAST_METRICS, y, probs, n_resamples=200, seed=5)
    assert set(vectorised) == set(FAST_METRICS)
    for name in FAST_METRICS:
        assert vectorised[name] == pytest.approx(list(loop[name]), abs=1e-12)


def test_resample_weights_count_n_draws_per_resample():
    weights = resample_weights(7, n_resamples=50, seed=0)
    assert weights.shape == (50, 7) and (weights.sum(axis=1) == 7).all()
    assert (resample_weights(7, n_resamples=50, seed=0) == weights).all()


def test_an_interval_contains_the_estimate_and_undefined_auc_is_none():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    probs = np.stack([1 - y * 0.3 - 0.35, y * 0.3 + 0.35], axis=1) + rng.normal(0, 0.05, (200, 2))
    probs = np.clip(probs, 0.01, None)
    probs /= probs.sum(axis=1, keepdims=True)
    out = metric_intervals(y, probs, n_resamples=300)
    point = fast_metrics(y, probs)
    for name in FAST_METRICS:
        assert out[name][0] <= point[name] <= out[name][1]
    one_class = metric_intervals(np.zeros(10, dtype=int), np.full((10, 2), 0.5), n_resamples=100)
    assert one_class["auc_macro"] is None and one_class["accuracy"] == [1.0, 1.0]
