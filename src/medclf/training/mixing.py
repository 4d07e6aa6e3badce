"""What the training step does to the float batch before the forward pass: progressive resizing
(``training.progressive_resize``) and mixup / cutmix (``training.mixup``, timm's :class:`~timm.data.Mixup`).

Both act on the float batch on the device, after the uint8 augmentation, and only while training: validation
and prediction always see full-size, unmixed images.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.data.mixup import mixup_target

from medclf.config import MixupConfig, ProgressiveResizeConfig, TrainingConfig
from medclf.training.callbacks import Callback

if TYPE_CHECKING:
    from medclf.training.loop import Trainer

__all__ = ["MIXUP_LOSSES", "BatchStep", "MixBatch", "ProgressiveResize", "chain", "mixup_problem",
           "progressive_size"]

# float images (N, C, H, W) and targets -> what the model trains on
BatchStep = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

# the losses that take mixup's soft targets (class probabilities): softmax cross-entropy, whose label smoothing
# applies to probability targets too. focal weighs each class by its own predicted probability and bce one-logit
# heads take one column, so neither reads a mixed target as a mixture
MIXUP_LOSSES = ("cross_entropy",)


def mixup_problem(cfg: TrainingConfig, *, multilabel: bool = False) -> str | None:
    """Why ``training.mixup`` cannot train ``cfg``'s loss (or a multi-label task), as a sentence; None when it can."""
    if cfg.mixup is None:
        return None
    if cfg.loss.name not in MIXUP_LOSSES:
        return (f"mixes images and trains on the mixed (soft) targets, which loss {cfg.loss.name!r} cannot take; "
                f"use training.loss.name: {' or '.join(MIXUP_LOSSES)}, or training.mixup: null")
    if multilabel:
        return ("mixes the images of single-label classes; this task is multi-label, whose sigmoid outputs it "
                "does not mix. Set training.mixup: null")
    return None


@contextlib.contextmanager
def _numpy_seeded(generator: torch.Generator) -> Iterator[None]:
    """NumPy's global random state seeded from ``generator`` inside, and put back after.

    timm's Mixup draws its mixing weight and box from NumPy's global state; seeding it from the trainer's own
    generator makes a fit's mixing follow ``seed`` (and each process's own stream under torchrun), and leaves
    any other user of NumPy's global state undisturbed.
    """
    state = np.random.get_state()
    np.random.seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
    try:
        yield
    finally:
        np.random.set_state(state)


class MixBatch:
    """timm's batch-wise :class:`~timm.data.Mixup` on a float batch and its class indices -> soft targets (N, K).

    The targets are not label-smoothed here: the loss smooths them (``training.loss.label_smoothing``), and as
    smoothing and mixing are both linear in the targets, that equals timm's smoothing inside Mixup, applied once.
    Mixup pairs image i with image N-1-i and needs an even batch: an odd batch's last image trains unmixed.
    """

    def __init__(self, cfg: MixupConfig, *, n_classes: int, generator: torch.Generator) -> None:
        self.n_classes, self.generator = n_classes, generator
        self.mixup = Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, prob=cfg.prob,
                           switch_prob=cfg.switch_prob, mode="batch", label_smoothing=0.0, num_classes=n_classes)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        even = len(x) - len(x) % 2
        soft = mixup_target(y, self.n_classes)  # one-hot; the mixed rows are replaced below
        if even:
            with _numpy_seeded(self.generator):
                _, soft[:even] = self.mixup(x[:even], y[:even])  # x[:even] is a view: mixed in place
        return x, soft


def progressive_size(full_hw: tuple[int, int], *, epoch: int, epochs: int, start_scale: float, until: float,
                     multiple: int = 8, minimum: int = 16) -> tuple[int, int]:
    """The training image size (H, W) in px at 0-based ``epoch`` of a stage of ``epochs``.

    The scale rises linearly from ``start_scale`` at the first epoch to 1 at fraction ``until`` of the stage and
    stays 1 after; each side is rounded to a multiple of ``multiple`` px, at least ``minimum`` (or the full side
    when that is smaller) and at most the full side.
    """
    done = epoch / epochs
    scale = start_scale + (1 - start_scale) * done / until if done < until else 1.0
    return tuple(min(full, max(minimum, multiple * round(full * scale / multiple))) for full in full_hw)


class ProgressiveResize(Callback):
    """Train the early epochs of each stage on downscaled images (``training.progressive_resize``).

    A callback for the epoch clock; the training step calls it on each float batch, which it resizes with
    antialiased bilinear interpolation (a plain downscale, as a lower-resolution scan would look).
    """

    def __init__(self, cfg: ProgressiveResizeConfig) -> None:
        self.cfg = cfg
        self.stage_epochs, self.epoch = 1, 0  # this stage's length, and the 0-based epoch within it
        self.size: tuple[int, int] | None = None  # the last resized batch's (H, W), for the log

    def on_stage_start(self, trainer: Trainer, stage: int) -> None:
        self.stage_epochs = trainer.cfg.stages[stage].epochs if trainer.cfg.stages else trainer.cfg.epochs
        self.epoch = -1

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.epoch += 1

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = (int(x.shape[-2]), int(x.shape[-1]))
        size = progressive_size(full, epoch=max(self.epoch, 0), epochs=self.stage_epochs,
                                start_scale=self.cfg.start_scale, until=self.cfg.until)
        self.size = size
        if size == full:
            return x, y
        return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False), y


def chain(*steps: BatchStep | None) -> BatchStep | None:
    """The given steps applied in order (None entries skipped); None when there are none."""
    present = [step for step in steps if step is not None]
    if not present:
        return None

    def run(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for step in present:
            x, y = step(x, y)
        return x, y

    return run
