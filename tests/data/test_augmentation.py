import pytest
import torch

from medclf.data.augmentation import build_augmentation
from medclf.errors import ConfigError


def test_hflip_flips_about_half_the_images_and_is_seeded():
    x = torch.arange(4, dtype=torch.uint8).repeat(200, 1, 4, 1)  # each row 0 1 2 3
    aug = build_augmentation(["hflip"])
    out1 = aug(x, torch.Generator().manual_seed(0))
    out2 = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(out1, out2)
    flipped = (out1[:, 0, 0, 0] == 3)
    assert 60 < int(flipped.sum()) < 140
    assert torch.equal(out1[flipped], x[flipped].flip(-1))
    assert torch.equal(out1[~flipped], x[~flipped])
    assert out1.dtype == torch.uint8


def test_no_presets_means_no_transform_and_unknown_is_an_error():
    assert build_augmentation([]) is None
    with pytest.raises(ConfigError, match="Unknown augmentation preset 'hflp'"):
        build_augmentation(["hflp"])
