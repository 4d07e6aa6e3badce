import math

import numpy as np
import pytest
import torch

from medclf.config import ModelConfig, TrainingConfig
from medclf.errors import ConfigError
from medclf.models import build_model
from medclf.training import lr_find as lr_find_module
from medclf.training.lr_find import lr_range_test, steepest_lr, valley_lr


def _separable(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 2
    x[y == 1, :, 2:6, 2:6] += 150  # a bright square marks class 1
    return x, y


def _run(start=1e-5, end=100.0, n_steps=60, seed=0, **training):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(name="layers", layers=[{"type": "conv", "filters": 4}]), in_chans=1,
                        n_classes=2, size_hw=(8, 8))
    cfg = TrainingConfig(batch_size=16, device="cpu", **({"optimizer": {"name": "sgd"}} | training))
    x, y = _separable()
    return lr_range_test(model, cfg, x, y, class_names=["a", "b"], seed=seed, start=start, end=end, n_steps=n_steps)


def test_the_curve_falls_then_rises_and_the_suggestions_lie_before_the_blow_up():
    result = _run()
    smoothed = np.asarray(result.smoothed)
    lowest = int(np.argmin(smoothed))
    assert smoothed[lowest] < smoothed[0] - 0.1  # it learns at moderate rates...
    assert smoothed[-1] > 4 * smoothed[lowest]  # ...and diverges at large ones
    assert result.stopped == "diverged" and len(result.lrs) < result.n_steps
    for suggestion in (result.steepest, result.valley):
        assert suggestion is not None and result.start <= suggestion <= result.end
        assert suggestion < result.lrs[lowest] < result.lrs[-1]  # on the descent, before the divergence point
    lrs = np.asarray(result.lrs)  # exponential: a constant ratio from one step to the next
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], (result.end / result.start) ** (1 / (result.n_steps - 1)))
    assert lrs[0] == pytest.approx(result.start)
    assert [row["step"] for row in result.rows()] == list(range(1, len(lrs) + 1))
    assert result.rows()[0]["loss"] == result.losses[0] == result.smoothed[0]  # bias correction: no pull to 0


def test_a_range_that_starts_too_high_stops_within_a_few_steps():
    result = _run(start=10.0, end=1e6, n_steps=60)
    assert result.stopped in ("diverged", "non-finite")
    assert len(result.lrs) < 15
    assert all(math.isfinite(v) for v in result.losses)  # a non-finite loss ends the test unrecorded


def test_the_head_keeps_its_ratio_to_the_swept_lr(monkeypatch):
    seen = []
    build = lr_find_module.build_optimizer
    monkeypatch.setattr(lr_find_module, "build_optimizer", lambda *a, **k: seen.append(build(*a, **k)) or seen[-1])
    result = _run(n_steps=20, optimizer={"name": "adamw", "lr": 1e-3, "head_lr": 1e-2})
    head = seen[0].param_groups
    ratios = sorted({round(g["lr"] / result.lrs[-1], 6) for g in head})
    assert ratios == [1.0, 10.0]


def test_same_seed_same_curve():
    assert _run(n_steps=15).losses == _run(n_steps=15).losses


@pytest.mark.parametrize("start, end, steps, match", [
    (0.0, 1.0, 50, "0 < start < end"),
    (1.0, 0.1, 50, "0 < start < end"),
    (1e-7, 10.0, 2, "at least 5 steps"),
])
def test_an_impossible_range_is_refused(start, end, steps, match):
    with pytest.raises(ConfigError, match=match):
        _run(start=start, end=end, n_steps=steps)


def test_steepest_and_valley_on_a_known_curve():
    lrs = np.geomspace(1e-6, 1.0, 61)
    log = np.log10(lrs)  # flat below 1e-4, falling fastest at 1e-3 to a minimum at 1e-2, then rising
    falling = 1.0 - 0.2 * (1 + np.tanh(2.5 * (log + 3)))
    losses = np.where(log < -4, 1.0, np.where(log <= -2, falling, falling[40] + (log + 2) ** 2))
    assert steepest_lr(lrs, losses) == pytest.approx(1e-3, rel=0.3)
    valley = valley_lr(lrs, losses)
    assert 1e-4 < valley < 1e-2  # inside the descent, never on the flat part or the rise
    assert steepest_lr(lrs[:1], losses[:1]) is None and valley_lr(lrs[:1], losses[:1]) is None


def test_valley_takes_the_middle_of_the_longest_descent():
    lrs = np.arange(1.0, 13.0)
    losses = np.array([5.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 3.0, 2.0, 9.0, 9.5])
    # the longest descent is 6, 5, 4, 3, 2, 1, 0.5 (ending at index 7); fastai's index: 0 + 2 + 1 = 3
    assert valley_lr(lrs, losses) == lrs[3]


def test_multi_label_targets_sweep_with_the_bce_loss():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 60, (64, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.stack([torch.arange(64) % 2, (torch.arange(64) // 2) % 2], 1).float()  # two independent labels
    x[y[:, 0] == 1, :, 2:6, 2:6] += 150
    x[y[:, 1] == 1, :, 0:2, :] += 100
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="layers", layers=[{"type": "conv", "filters": 4}]), in_chans=1,
                        n_classes=2, size_hw=(8, 8))
    cfg = TrainingConfig(batch_size=16, device="cpu", loss={"name": "bce"})
    result = lr_range_test(model, cfg, x, y, class_names=["a", "b"], seed=0, multilabel=True, start=1e-5,
                           end=100.0, n_steps=40)
    assert result.stopped == "diverged" and min(result.smoothed) < result.smoothed[0]
    assert result.start <= result.valley < result.lrs[-1]


def test_probe_stages_are_skipped_and_a_probe_only_fit_is_refused(monkeypatch):
    rules = []
    real = lr_find_module.apply_freeze
    monkeypatch.setattr(lr_find_module, "apply_freeze", lambda m, rule, **kw: rules.append(rule) or real(m, rule, **kw))
    result = _run(n_steps=10, recipe="probe_finetune", stages=[{"kind": "probe"}, {"epochs": 1, "freeze": "none"}])
    assert rules == ["none"] and result.lrs  # the fine-tuning stage was swept: a probe has no learning rate
    with pytest.raises(ConfigError, match="every stage is a probe .* lr-find has nothing to sweep"):
        _run(n_steps=10, recipe="linear_probe")
