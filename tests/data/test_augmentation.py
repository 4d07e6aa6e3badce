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


PRESETS = ["basic", "shift", "intensity", "distortion", "blur", "vflip"]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_preset_keeps_shape_and_dtype_changes_pixels_and_is_seeded(preset, channels):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 255, (8, channels, 24, 24), generator=g, dtype=torch.uint8)
    aug = build_augmentation([preset], size_hw=(24, 24), channels=channels)
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b)
    assert not torch.equal(a, x)


def test_preset_parameters_can_be_overridden():
    x = torch.zeros(4, 1, 21, 21, dtype=torch.uint8)
    x[:, :, 10, :] = 255  # a horizontal line
    still = build_augmentation(["basic"], {"basic": {"RandomRotation": {"degrees": 0},
                                                     "RandomVerticalFlip": {"p": 0.0}}}, size_hw=(21, 21))
    out = still(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, x)  # only the horizontal flip remains, which leaves a centred line as it is
    with pytest.raises(ValueError, match="the preset 'basic' has no 'ColorJitter' transform"):
        build_augmentation(["basic"], {"basic": {"ColorJitter": {"brightness": 0.5}}})


def test_free_transforms_are_torchvision_v2_classes_with_their_arguments():
    x = torch.randint(0, 255, (4, 1, 16, 16), dtype=torch.uint8)
    aug = build_augmentation([], transforms=[{"name": "RandomInvert", "p": 1.0}], size_hw=(16, 16))
    assert torch.equal(aug(x, torch.Generator()), 255 - x)
    from medclf.experiments.validation import parse_checked_config

    def checked(transforms):  # the config's check of training.augmentation, run where every config is checked
        parse_checked_config({"data": {"source": {"type": "npz", "path": "d.npz"}},
                              "training": {"augmentation": {"transforms": transforms}}})

    with pytest.raises(ValueError, match="'RandomWarp' is not a torchvision.transforms.v2 transform"):
        checked([{"name": "RandomWarp"}])
    with pytest.raises(ValueError, match=r"RandomRotation\(degree=5\) fails"):
        checked([{"name": "RandomRotation", "degree": 5}])


@pytest.mark.parametrize(("angle", "shear", "scale"), [(90, 0, 1.0), (30, 0, 1.0), (-40, -10, 1.2), (0, 20, 0.9)])
def test_batched_affine_matches_torchvision_for_fixed_parameters(angle, shear, scale):
    from torchvision.transforms.v2 import functional as TF

    from medclf.data.augmentation import _batched_affine

    x = torch.randint(0, 255, (2, 1, 15, 15), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = _batched_affine({"degrees": [angle, angle], "shear": [shear, shear], "scale": [scale, scale]})(
        x, torch.Generator())
    ref = torch.stack([TF.affine(img, angle=angle, translate=[0, 0], scale=scale, shear=[shear, 0]) for img in x])
    assert (out != ref).float().mean() < 0.02  # nearest sampling: at most a rounding-edge pixel or two


def test_rotation_draws_one_angle_per_image_in_one_batched_call():
    x = torch.zeros(16, 1, 21, 21, dtype=torch.uint8)
    x[:, :, 10, :] = 255
    out = build_augmentation([], transforms=[{"name": "RandomRotation", "degrees": 45}], size_hw=(21, 21))(
        x, torch.Generator().manual_seed(0))
    assert len({tuple(o.flatten().tolist()) for o in out}) >= 12  # one angle per image (a few may round alike)


def test_presets_hold_the_parameters_the_docs_promise():
    from medclf.data.augmentation import preset_steps

    assert preset_steps(["basic"], {}) == [("RandomHorizontalFlip", {"p": 0.5}), ("RandomVerticalFlip", {"p": 0.5}),
                                           ("RandomRotation", {"degrees": 15})]
    assert preset_steps(["shift"], {}) == [("RandomRotation", {"degrees": 5}),
                                           ("RandomAffine", {"degrees": 0, "translate": [0.05, 0.05]}),
                                           ("RandomHorizontalFlip", {"p": 0.5})]
    (name, args), = preset_steps(["intensity"], {})
    assert name == "ColorJitter" and set(args) == {"brightness", "contrast", "saturation", "hue"}
    steps = dict(preset_steps(["distortion"], {}))
    assert steps["RandomPerspective"]["distortion_scale"] == 0.5 and "RandomAffine" in steps
    assert steps["RandomResizedCrop"]["scale"] == [0.8, 1.0]
    assert preset_steps(["blur"], {})[0][0] == "GaussianBlur" and preset_steps(["blur"], {})[0][1]["kernel_size"] == 5
