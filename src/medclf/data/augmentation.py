"""Training-time augmentation of whole batches of cached uint8 images.

A preset is a function registered under the name a user writes in ``training.augmentation.presets``; it returns
the ``torchvision.transforms.v2`` transforms it stands for, by class name, with their arguments (any of which
``training.augmentation.params`` overrides). ``training.augmentation.transforms`` appends any other v2
transform. :func:`build_augmentation` turns the list into one :data:`BatchTransform`: (B, C, H, W) uint8 in,
the same shape out. Flips run vectorised over the batch (one random decision per image); the other transforms
draw their own parameters per image: rotations and affine maps run as one ``grid_sample`` over the batch, the
rest (colour jitter, perspective, crops, blur) image by image on the small cached tensors. All randomness
comes from the given ``torch.Generator``: the same seed gives the same batches. The draws are made on the CPU and
moved to the batch's device, so a batch on the GPU gets the same draws as on the CPU (GaussianNoise and AugMix
excepted: torchvision draws their noise on the image's device, seeded but with other numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from medclf.registry import Registry

__all__ = [
    "AUGMENTATIONS",
    "BatchTransform",
    "build_augmentation",
    "check_augmentation",
    "preset_steps",
]

BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
Steps = dict[str, dict[str, Any]]  # {v2 class name: keyword arguments}, in order
AUGMENTATIONS: Registry[Callable[[], Steps]] = Registry("augmentation preset")


@AUGMENTATIONS.register("hflip")
def hflip() -> Steps:
    """Horizontal flip of each image with probability 0.5."""
    return {"RandomHorizontalFlip": {"p": 0.5}}


@AUGMENTATIONS.register("vflip")
def vflip() -> Steps:
    """Vertical flip of each image with probability 0.5."""
    return {"RandomVerticalFlip": {"p": 0.5}}


@AUGMENTATIONS.register("basic")
def basic() -> Steps:
    """Horizontal and vertical flips (p 0.5 each) and a rotation of up to 15 degrees."""
    return {"RandomHorizontalFlip": {"p": 0.5}, "RandomVerticalFlip": {"p": 0.5}, "RandomRotation": {"degrees": 15}}


@AUGMENTATIONS.register("shift")
def shift() -> Steps:
    """A rotation of up to 5 degrees, a translation of up to 5 % on each axis, and a horizontal flip."""
    return {
        "RandomRotation": {"degrees": 5},
        "RandomAffine": {"degrees": 0, "translate": [0.05, 0.05]},
        "RandomHorizontalFlip": {"p": 0.5},
    }


@AUGMENTATIONS.register("intensity")
def intensity() -> Steps:
    """Colour jitter: brightness, contrast, saturation and hue (the last two only change RGB images)."""
    return {"ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05}}


@AUGMENTATIONS.register("distortion")
def distortion() -> Steps:
    """Perspective (distortion 0.5), a random affine map, and a resized crop of 80-100 % of the image."""
    return {
        "RandomPerspective": {"distortion_scale": 0.5, "p": 0.5},
        "RandomAffine": {"degrees": 10, "translate": [0.05, 0.05], "scale": [0.9, 1.1], "shear": 5},
        "RandomResizedCrop": {"scale": [0.8, 1.0], "antialias": True},
    }


@AUGMENTATIONS.register("blur")
def blur() -> Steps:
    """Gaussian blur with a 5x5 kernel and a sigma drawn from 0.1-2.0."""
    return {"GaussianBlur": {"kernel_size": 5, "sigma": [0.1, 2.0]}}


def preset_steps(presets: Sequence[str], params: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[tuple]:
    """The (v2 class name, arguments) of each named preset in order, with ``params`` overrides applied."""
    steps = []
    for name in presets:
        own = AUGMENTATIONS.get(name)()
        for transform in params.get(name, {}):
            if transform not in own:
                raise ValueError(
                    f"training.augmentation.params.{name}: the preset {name!r} has no {transform!r} transform; "
                    f"it has {', '.join(own)}"
                )
        steps += [(t, {**kwargs, **params.get(name, {}).get(t, {})}) for t, kwargs in own.items()]
    return steps


def _free_steps(transforms: Sequence[Mapping[str, Any]]) -> list[tuple]:
    steps = []
    for i, spec in enumerate(transforms):
        spec = dict(spec)
        name = spec.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(
                f"training.augmentation.transforms[{i}] needs a 'name', a torchvision.transforms.v2 class such "
                "as RandomRotation, with its arguments beside it"
            )
        steps.append((name, spec))
    return steps


def _instantiate(name: str, kwargs: dict[str, Any], *, size_hw: tuple[int, int], channels: int) -> v2.Transform:
    cls = getattr(v2, name, None)
    if not (isinstance(cls, type) and issubclass(cls, v2.Transform)):
        raise ValueError(f"{name!r} is not a torchvision.transforms.v2 transform (for example RandomRotation)")
    kwargs = dict(kwargs)
    if name in ("RandomResizedCrop", "Resize", "CenterCrop", "RandomCrop") and "size" not in kwargs:
        kwargs["size"] = list(size_hw)  # the cached image size: augmentation never changes the input shape
    if name == "ColorJitter" and channels == 1:
        kwargs.pop("saturation", None)  # undefined on grayscale
        kwargs.pop("hue", None)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"torchvision.transforms.v2.{name}({_args(kwargs)}) fails: {error}") from None


def _args(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def check_augmentation(
    presets: Sequence[str],
    params: Mapping[str, Mapping[str, Mapping[str, Any]]],
    transforms: Sequence[Mapping[str, Any]],
) -> None:
    """Raise ValueError (as config validation expects) when a preset, override or transform cannot be built."""
    for name in params:
        if name not in presets:
            raise ValueError(f"training.augmentation.params names {name!r}, which is not in presets {list(presets)}")
    for name, kwargs in preset_steps(presets, params) + _free_steps(transforms):
        _instantiate(name, kwargs, size_hw=(32, 32), channels=3)


# ------------------------------------------------------------------------------------------ batch execution
def _random_flip(dim: int, p: float) -> BatchTransform:
    def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mask = torch.rand(x.shape[0], generator=generator) < p
        return torch.where(mask.view(-1, 1, 1, 1).to(x.device), x.flip(dim), x)

    return flip


def _range(value: Any, *, symmetric: bool) -> tuple[float, float]:
    """``d`` -> (-d, d) for symmetric arguments such as degrees; ``[a, b]`` -> (a, b)."""
    if isinstance(value, (int, float)):
        return (-float(value), float(value)) if symmetric else (float(value), float(value))
    return float(value[0]), float(value[1])


def _batched_affine(kwargs: dict[str, Any]) -> BatchTransform:
    """RandomRotation / RandomAffine with one random draw per image, as one ``grid_sample`` over the batch.

    Parameters are drawn as torchvision draws them (angle, translation as a fraction of the size, scale, shear
    on x), pixels are sampled nearest (torchvision's default) and the outside is filled with 0.
    """
    degrees = _range(kwargs.get("degrees", 0), symmetric=True)
    translate = kwargs.get("translate")
    scale = _range(kwargs["scale"], symmetric=False) if kwargs.get("scale") is not None else None
    shear = _range(kwargs["shear"], symmetric=True) if kwargs.get("shear") is not None else None

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(b, generator=generator, dtype=torch.float64)

        angle = torch.deg2rad(uniform(*degrees))
        s = uniform(*scale) if scale else torch.ones(b, dtype=torch.float64)
        sh = -torch.tan(torch.deg2rad(uniform(*shear))) if shear else torch.zeros(b, dtype=torch.float64)
        tx = uniform(-translate[0] * w, translate[0] * w).round() if translate else torch.zeros(b, dtype=torch.float64)
        ty = uniform(-translate[1] * h, translate[1] * h).round() if translate else torch.zeros(b, dtype=torch.float64)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # forward map in centred pixel coordinates (y down), as torchvision's affine: R(angle) S SHx(shear)
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        shear_m = torch.stack([torch.stack([torch.ones_like(sh), sh], -1),
                               torch.stack([torch.zeros_like(sh), torch.ones_like(sh)], -1)], -2)
        forward = rot @ shear_m * s.view(-1, 1, 1)
        inverse = torch.linalg.inv(forward)
        to_unit = torch.diag(torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64))
        lin = to_unit @ inverse @ torch.linalg.inv(to_unit)
        shift = -(to_unit @ inverse @ torch.stack([tx, ty], -1).unsqueeze(-1))
        theta = torch.cat([lin, shift], -1).float().to(x.device)
        grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        out = torch.nn.functional.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros",
                                              align_corners=False)
        return out.to(torch.uint8)

    return apply


_BATCHED_AFFINE_ARGS = {"degrees", "translate", "scale", "shear"}


def _shear_x_only(kwargs: dict[str, Any]) -> bool:
    shear = kwargs.get("shear")
    return shear is None or isinstance(shear, (int, float)) or len(shear) == 2


def _per_image(transform: v2.Transform) -> BatchTransform:
    """Apply ``transform`` image by image, seeding torch's global RNG from ``generator`` and restoring it."""

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        # manual_seed reseeds every device's generator too: fork the batch's GPU as well, so dropout's stays put
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            torch.manual_seed(seed)
            return torch.stack([transform(image) for image in x])

    return apply


def _batch_step(name: str, kwargs: dict[str, Any], *, size_hw: tuple[int, int], channels: int) -> BatchTransform:
    if name in ("RandomHorizontalFlip", "RandomVerticalFlip") and set(kwargs) <= {"p"}:
        return _random_flip(-1 if name == "RandomHorizontalFlip" else -2, float(kwargs.get("p", 0.5)))
    if name in ("RandomRotation", "RandomAffine") and set(kwargs) <= _BATCHED_AFFINE_ARGS and _shear_x_only(kwargs):
        _instantiate(name, kwargs, size_hw=size_hw, channels=channels)  # torchvision validates the arguments
        return _batched_affine(kwargs)
    return _per_image(_instantiate(name, kwargs, size_hw=size_hw, channels=channels))


def build_augmentation(
    presets: Sequence[str],
    params: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    transforms: Sequence[Mapping[str, Any]] = (),
    *,
    size_hw: tuple[int, int] = (64, 64),
    channels: int = 1,
) -> BatchTransform | None:
    """Chain the named presets, then the free transforms; None when there are none (no work in the hot path).

    Args:
        presets: registered preset names, applied in order.
        params: ``{preset: {transform: {argument: value}}}`` overrides of the presets' arguments.
        transforms: extra ``{name: <v2 class>, ...arguments}`` transforms, applied after the presets.
        size_hw: the cached images' (height, width); crops are resized back to it.
        channels: the images' channels (colour jitter's saturation and hue are dropped for grayscale).
    """
    steps = preset_steps(presets, params or {}) + _free_steps(transforms)
    if not steps:
        return None
    chain = [_batch_step(name, kwargs, size_hw=size_hw, channels=channels) for name, kwargs in steps]

    def run(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in chain:
            x = step(x, generator)
        return x

    return run
