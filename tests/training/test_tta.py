"""Test-time augmentation in predict_proba: probabilities averaged over the identity and each flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medclf.errors import ConfigError
from medclf.training import Runtime, predict_proba

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)


class HalvesModel(nn.Module):
    """Three logits: the left half's mean, the top half's mean, and 0; so hflip and vflip change its output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, h = x.shape[-1] // 2, x.shape[-2] // 2
        left, top = x[..., :w].mean(dim=(1, 2, 3)), x[..., :h, :].mean(dim=(1, 2, 3))
        return torch.stack([4 * left, 4 * top, torch.zeros_like(left)], dim=1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _expected(images: torch.Tensor, flips: list[tuple[int, ...]]) -> np.ndarray:
    """The mean softmax over the identity and ``flips``, computed by hand from the halves' means."""
    x = images.double().numpy() / 255.0
    views = [x] + [np.flip(x, axis=axes) for axes in flips]
    probs = []
    for v in views:
        w, h = v.shape[-1] // 2, v.shape[-2] // 2
        left, top = v[..., :w].mean(axis=(1, 2, 3)), v[..., :h, :].mean(axis=(1, 2, 3))
        probs.append(_softmax(np.stack([4 * left, 4 * top, np.zeros_like(left)], axis=1)))
    return np.mean(probs, axis=0)


@pytest.fixture()
def corner_images() -> torch.Tensor:
    """Two images: a bright top-left corner, and a bright bottom-right corner."""
    images = torch.zeros((2, 1, 8, 8), dtype=torch.uint8)
    images[0, :, :4, :4] = 255
    images[1, :, 4:, 4:] = 200
    return images


@pytest.mark.parametrize(("tta", "flips"), [
    (["hflip"], [(-1,)]),
    (["vflip"], [(-2,)]),
    (["hflip", "vflip"], [(-1,), (-2,)]),
])
def test_tta_averages_the_probabilities_of_each_flip(corner_images, tta, flips):
    got = predict_proba(HalvesModel(), corner_images, batch_size=1, runtime=CPU, tta=tta)
    np.testing.assert_allclose(got, _expected(corner_images, flips), atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)


def test_without_tta_the_prediction_is_unchanged(corner_images):
    plain = predict_proba(HalvesModel(), corner_images, batch_size=2, runtime=CPU)
    np.testing.assert_allclose(plain, _expected(corner_images, []), atol=1e-6)
    assert np.array_equal(plain, predict_proba(HalvesModel(), corner_images, batch_size=2, runtime=CPU, tta=[]))
    with_tta = predict_proba(HalvesModel(), corner_images, batch_size=2, runtime=CPU, tta=["hflip"])
    assert np.abs(with_tta - plain).max() > 0.05  # the model is flip-sensitive, so averaging changes it


def test_a_flip_averaged_prediction_does_not_depend_on_that_flip(corner_images):
    flipped = torch.flip(corner_images, (-1,))
    a = predict_proba(HalvesModel(), corner_images, batch_size=2, runtime=CPU, tta=["hflip"])
    b = predict_proba(HalvesModel(), flipped, batch_size=2, runtime=CPU, tta=["hflip"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.abs(predict_proba(HalvesModel(), corner_images, batch_size=2, runtime=CPU)
                  - predict_proba(HalvesModel(), flipped, batch_size=2, runtime=CPU)).max() > 0.05


def test_an_unknown_flip_is_refused(corner_images):
    with pytest.raises(ConfigError, match=r"'rotate90'.*not one of \['hflip', 'vflip'\]"):
        predict_proba(HalvesModel(), corner_images, batch_size=2, runtime=CPU, tta=["rotate90"])
