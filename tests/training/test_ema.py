"""training.ema: timm's ModelEmaV3 updated after every optimizer step, validated, kept and saved in place of the
raw weights (src/medclf/training/ema.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from medclf.config import EmaConfig, ModelConfig, TrainingConfig
from medclf.models import build_model
from medclf.training import Callback, Trainer


def _toy(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 2
    x[y == 1, :, 4:12, 4:12] += 150
    return x, y


def _fit(cfg, callbacks=()):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=2)
    x, y = _toy()
    trainer = Trainer(model, cfg, class_names=["a", "b"], seed=0, callbacks=callbacks)
    return trainer, trainer.fit(x[:64], y[:64], x[64:], y[64:])


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(v, b[k]) for k, v in a.items())


class _Snapshots(Callback):
    """Each epoch's averaged and raw weights, taken after the built-in callbacks ran."""

    def __init__(self):
        self.ema, self.raw = [], []

    def on_epoch_end(self, trainer, epoch, logs):
        self.ema.append(copy.deepcopy(trainer.ema.module.state_dict()))
        self.raw.append(copy.deepcopy(trainer.model.state_dict()))


def test_the_kept_and_saved_weights_are_the_averages_not_the_raw_ones():
    snaps = _Snapshots()
    trainer, result = _fit(TrainingConfig(epochs=3, batch_size=16, device="cpu", ema={"decay": 0.9}), [snaps])
    best = result.best_epoch - 1
    assert _same(trainer.best.best_state, snaps.ema[best])
    assert not _same(trainer.best.best_state, snaps.raw[best])  # the average lags the raw weights
    assert _same(trainer.model.state_dict(), snaps.ema[best])  # the fit ends with the best epoch's average
    assert trainer.eval_model is trainer.ema.module


def test_without_restore_best_the_fit_ends_with_the_last_average():
    snaps = _Snapshots()
    cfg = TrainingConfig(epochs=2, batch_size=16, device="cpu", ema=0.9, early_stopping={"restore_best": False})
    trainer, _ = _fit(cfg, [snaps])
    assert _same(trainer.model.state_dict(), snaps.ema[-1]) and not _same(snaps.ema[-1], snaps.raw[-1])


def test_decay_zero_trains_and_scores_exactly_as_without_ema():
    _, plain = _fit(TrainingConfig(epochs=2, batch_size=16, device="cpu"))
    trainer, zero = _fit(TrainingConfig(epochs=2, batch_size=16, device="cpu", ema={"decay": 0.0, "warmup": False}))
    assert [h["val_loss"] for h in zero.history] == [h["val_loss"] for h in plain.history]
    assert trainer.eval_model is not trainer.model  # validation did read the (identical) average


def test_each_sgd_stage_restarts_the_average_and_a_probe_stage_is_scored_as_fitted():
    seen = []

    class AtStageStart(Callback):
        def on_stage_start(self, trainer, stage):
            seen.append((stage, trainer.eval_model is trainer.model,
                         _same(trainer.ema.ema.module.state_dict(), trainer.model.state_dict())))

    cfg = TrainingConfig(recipe="probe_finetune", epochs=3, batch_size=16, device="cpu", ema=0.9)
    _fit(cfg, [AtStageStart()])
    # the probe stage: the model itself; each sgd stage: an average restarted at the weights it starts from
    assert [(s, is_model) for s, is_model, _ in seen] == [(0, True), (1, False)]
    assert seen[1][2]


def test_the_ema_key_takes_a_decay_as_shorthand_and_refuses_a_decay_of_one_or_a_boolean():
    assert TrainingConfig(ema=0.99).ema == EmaConfig(decay=0.99, warmup=True)
    assert TrainingConfig().ema is None
    with pytest.raises(ValueError, match=r"ema\.decay\n  Input should be less than 1"):
        TrainingConfig(ema=1.0)
    with pytest.raises(ValueError, match=r"ema\n  Input should be a valid dictionary or instance of EmaConfig"):
        TrainingConfig(ema=True)
