"""Training-time augmentation of whole batches of cached uint8 images.

Each preset is a function registered under the name a user writes in ``training.augmentation.presets``;
it builds a :data:`BatchTransform` that maps a (B, C, H, W) uint8 batch to an augmented batch of the same
shape, drawing its randomness from the given ``torch.Generator`` so runs are reproducible. Transforms run
vectorised over the batch (one random decision per image), never per image in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from medclf.registry import Registry

__all__ = ["AUGMENTATIONS", "BatchTransform", "build_augmentation"]

BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTATIONS: Registry[Callable[[], BatchTransform]] = Registry("augmentation preset")


def _random_flip(dim: int, p: float) -> BatchTransform:
    def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mask = torch.rand(x.shape[0], generator=generator) < p
        return torch.where(mask.view(-1, 1, 1, 1).to(x.device), x.flip(dim), x)

    return flip


@AUGMENTATIONS.register("hflip")
def hflip() -> BatchTransform:
    """Horizontal flip of each image with probability 0.5."""
    return _random_flip(-1, 0.5)


@AUGMENTATIONS.register("vflip")
def vflip() -> BatchTransform:
    """Vertical flip of each image with probability 0.5."""
    return _random_flip(-2, 0.5)


def build_augmentation(presets: Sequence[str]) -> BatchTransform | None:
    """Chain the named presets in order; None when there are none (no work in the hot path)."""
    transforms = [AUGMENTATIONS.get(name)() for name in presets]
    if not transforms:
        return None

    def chain(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for transform in transforms:
            x = transform(x, generator)
        return x

    return chain
