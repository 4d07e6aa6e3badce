"""training.mixup (timm's Mixup on the float batch) and training.progressive_resize (src/medclf/training/mixing.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.data.mixup import mixup_target

from medclf.config import MixupConfig, ModelConfig, ProgressiveResizeConfig, TrainingConfig
from medclf.errors import ConfigError
from medclf.models import build_model
from medclf.training import Trainer
from medclf.training.losses import build_loss
from medclf.training.lr_find import lr_range_test
from medclf.training.mixing import MixBatch, progressive_size


def _toy(n=96, side=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (n, 1, side, side), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 2
    x[y == 1, :, side // 4:3 * side // 4, side // 4:3 * side // 4] += 150
    return x, y


def _model():
    torch.manual_seed(0)
    return build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=2)


# ------------------------------------------------------------------------------------------------ mixup
def test_mixup_pairs_each_image_with_its_mirror_and_makes_the_targets_soft():
    x = torch.rand(5, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    mix = MixBatch(MixupConfig(mixup_alpha=0.4), n_classes=3, generator=torch.Generator().manual_seed(1))
    mixed, soft = mix(x.clone(), y)
    lam = float(soft[1, 1])  # image 1 (class 1) is mixed with image 2 (class 2), and 0 with 3 (both class 0)
    assert 0 < lam < 1 and torch.allclose(soft.sum(dim=1), torch.ones(5))
    assert torch.equal(soft[0], torch.tensor([1.0, 0.0, 0.0])) and torch.allclose(mixed[0], lam * x[0] + (1 - lam) * x[3])
    assert torch.allclose(soft[1], torch.tensor([0.0, lam, 1 - lam]))
    assert torch.allclose(mixed[1], lam * x[1] + (1 - lam) * x[2])
    assert torch.equal(mixed[4], x[4]) and torch.equal(soft[4], torch.tensor([0.0, 1.0, 0.0]))  # odd one out


def test_mixing_follows_the_trainers_generator_and_leaves_numpys_global_state_alone():
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
    np.random.seed(7)
    expected_next = np.random.rand()
    np.random.seed(7)
    draws = [MixBatch(MixupConfig(mixup_alpha=0.4, cutmix_alpha=1.0), n_classes=2,
                      generator=torch.Generator().manual_seed(3))(x.clone(), y) for _ in range(2)]
    assert np.random.rand() == expected_next
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])


def test_label_smoothing_applies_once_to_the_mixed_targets():
    objective = build_loss(TrainingConfig().loss, class_names=["a", "b", "c"], train_targets=np.array([0, 1, 2]))
    y, lam = torch.tensor([0, 1, 2, 2]), 0.7
    logits = torch.randn(4, 3)
    mixed = mixup_target(y, 3, lam)  # no smoothing: the loss's own label_smoothing (0.1) smooths it
    timm_smoothed = mixup_target(y, 3, lam, smoothing=0.1)  # what timm's train.py gives SoftTargetCrossEntropy
    expected = torch.sum(-timm_smoothed * F.log_softmax(logits, dim=1), dim=1).mean()
    assert torch.allclose(objective(logits, mixed), expected)


def test_a_fit_with_mixup_and_cutmix_and_an_lr_sweep_with_mixup_run():
    x, y = _toy()
    cfg = TrainingConfig(epochs=2, batch_size=15, device="cpu",
                         mixup={"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "switch_prob": 0.5})
    result = Trainer(_model(), cfg, class_names=["a", "b"], seed=0).fit(x[:64], y[:64], x[64:], y[64:])
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in result.history)
    found = lr_range_test(_model(), cfg, x[:64], y[:64], class_names=["a", "b"], seed=0, n_steps=6)
    assert len(found.rows()) >= 5


@pytest.mark.parametrize("loss", ["focal", "bce", "poisson"])
def test_losses_that_cannot_take_mixed_targets_are_refused_at_the_boundary_and_by_the_trainer(loss):
    from medclf.experiments.validation import parse_checked_config

    message = (rf"training\.mixup: mixes images and trains on the mixed \(soft\) targets, which loss '{loss}' cannot "
               r"take; use training\.loss\.name: cross_entropy, or training\.mixup: null")
    with pytest.raises(ConfigError, match=message):
        parse_checked_config({"data": {"source": {"type": "synthetic"}},
                              "training": {"loss": {"name": loss}, "mixup": {}}}, check_device=False)
    cfg = TrainingConfig(loss={"name": loss}, mixup={}, device="cpu")
    with pytest.raises(ConfigError, match=f"^{message}$"):
        Trainer(_model(), cfg, class_names=["a", "b"], seed=0)


def test_a_multilabel_task_is_refused_and_mixing_nothing_is_an_error():
    with pytest.raises(ConfigError, match=r"^training\.mixup: mixes the images of single-label classes; this task is "
                                          r"multi-label, .* Set training\.mixup: null$"):
        Trainer(_model(), TrainingConfig(mixup={}, device="cpu"), class_names=["a", "b"], seed=0, multilabel=True)
    with pytest.raises(ValueError, match="mixup_alpha and cutmix_alpha are both 0, which mixes nothing"):
        MixupConfig(mixup_alpha=0.0)


# -------------------------------------------------------------------------------------- progressive resizing
@pytest.mark.parametrize(("full", "epoch", "expected"), [
    ((64, 64), 0, (32, 32)), ((64, 64), 1, (40, 40)), ((64, 64), 4, (56, 56)), ((64, 64), 5, (64, 64)),
    ((64, 64), 9, (64, 64)), ((28, 28), 0, (16, 16)), ((12, 12), 0, (12, 12)), ((128, 96), 2, (88, 64)),
])
def test_progressive_size_rises_linearly_to_full_size_in_multiples_of_8_px(full, epoch, expected):
    # 10 epochs from half size, full size from half-way (epoch 5); epoch 2: scale 0.7, 128 -> 89.6 -> 88
    assert progressive_size(full, epoch=epoch, epochs=10, start_scale=0.5, until=0.5) == expected


def test_the_model_trains_on_smaller_images_early_and_validates_at_full_size():
    x, y = _toy(side=32)
    model = _model()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append((module.training, tuple(args[0].shape[-2:]))))
    cfg = TrainingConfig(epochs=4, batch_size=32, device="cpu", progressive_resize={"start_scale": 0.5, "until": 0.5})
    Trainer(model, cfg, class_names=["a", "b"], seed=0).fit(x[:64], y[:64], x[64:], y[64:])
    train_sizes = [size for training, size in seen if training]
    assert train_sizes == [(16, 16)] * 2 + [(24, 24)] * 2 + [(32, 32)] * 4  # 2 batches an epoch
    assert {size for training, size in seen if not training} == {(32, 32)}


def test_progressive_resize_is_refused_for_a_layer_network_that_flattens_a_fixed_size():
    from medclf.experiments.validation import parse_checked_config

    def config(layers):
        return {"data": {"source": {"type": "synthetic"}}, "model": {"name": "layers", "layers": layers},
                "training": {"progressive_resize": {}}}

    with pytest.raises(ConfigError, match=r"training\.progressive_resize: trains on smaller images early on, but this "
                                          r"layer network's first flatten layer flattens"):
        parse_checked_config(config([{"type": "conv", "filters": 4}, {"type": "flatten"}, {"type": "dense",
                                                                                         "units": 8}]),
                             check_device=False)
    parse_checked_config(config([{"type": "conv", "filters": 4}, {"type": "globalpool"}, {"type": "dense",
                                                                                         "units": 8}]),
                         check_device=False)
    assert ProgressiveResizeConfig() == ProgressiveResizeConfig(start_scale=0.5, until=0.5)
