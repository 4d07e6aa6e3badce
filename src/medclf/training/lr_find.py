"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates"; fastai's ``lr_find``).

A throwaway model is trained from its initial weights for at most ``n_steps`` mini-batches while the learning rate
grows exponentially from ``start`` to ``end``; the loss is smoothed with an exponential moving average (bias
corrected, as fastai does) and the test stops early once the smoothed loss passes ``diverge`` times its best or a
loss is not finite. Two rates are suggested from the smoothed curve: ``steepest`` (where it falls fastest against
log lr) and ``valley`` (fastai's: the middle of the longest descending stretch).

Every step is the Trainer's own (:func:`medclf.training.loop.train_step`): the same oversampling plan drawn afresh
each pass over the training split, the same augmentation, loss, autocast precision, gradient scaler and memory
format, and the first stage's optimizer and freezing. What is swept is ``optimizer.lr``; every parameter group keeps
its ratio to it (``head_lr`` / ``lr``), and the configured scheduler is not used (the sweep is the schedule).

Why not ``torch-lr-finder`` (PyPI): its exponential schedule sends every parameter group to the same ``end_lr``
(losing ``head_lr``'s ratio), it reads batches from a ``DataLoader`` and moves them itself (our batches are uint8
tensors augmented on the fly and converted on the device), it snapshots and restores the model and optimizer
(needless for a throwaway model), and it has no valley suggestion. The loop below is the ~60 lines it would save.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medclf.config import TrainingConfig
from medclf.data.rows import Rows
from medclf.errors import ConfigError
from medclf.models.freezing import apply_freeze, frozen_eval_modules
from medclf.training.device import Runtime, resolve_runtime, torch_threads
from medclf.training.loop import (
    TrainingAugmentation,
    _batches,
    augment_batch,
    fit_stages,
    train_step,
    training_augmentations,
)
from medclf.training.losses import build_loss
from medclf.training.mixing import MixBatch, mixup_problem
from medclf.training.optimizers import build_optimizer
from medclf.training.sampling import training_plan

__all__ = ["LR_FIND_COLUMNS", "LRFindResult", "check_lr_range", "lr_range_test", "steepest_lr", "valley_lr"]

LR_FIND_COLUMNS = ("step", "lr", "loss", "smoothed_loss")
SMOOTHING = 0.98  # fastai's beta: the moving average spans about 50 steps


@dataclass
class LRFindResult:
    """The recorded curve (one entry per step taken) and the rates suggested from it.

    ``lrs`` are values of ``optimizer.lr``; ``stopped`` is ``"diverged"``, ``"non-finite"`` or None (every step
    ran); ``steepest``/``valley`` are None when too few steps were recorded to suggest anything.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    start: float
    end: float
    n_steps: int
    stopped: str | None
    steepest: float | None
    valley: float | None

    def rows(self) -> list[dict[str, float | int]]:
        """The curve as rows of :data:`LR_FIND_COLUMNS` (steps counted from 1)."""
        return [{"step": i + 1, "lr": lr, "loss": loss, "smoothed_loss": smooth}
                for i, (lr, loss, smooth) in enumerate(zip(self.lrs, self.losses, self.smoothed))]


def lr_range_test(
    model: nn.Module,
    cfg: TrainingConfig,
    train_x: torch.Tensor | Rows,
    train_y: torch.Tensor,
    *,
    class_names: Sequence[str],
    seed: int,
    multilabel: bool = False,
    start: float = 1e-7,
    end: float = 10.0,
    n_steps: int = 100,
    diverge: float = 4.0,
    on_step: Callable[[int, float, float], None] | None = None,
) -> LRFindResult:
    """Run the range test on ``model`` (changed in place: it is a throwaway) and suggest learning rates.

    Args:
        model: a freshly built classifier (as a fold would start from).
        cfg: the ``training`` section: its loss, augmentation, oversampling, batch size, device and precision, and
            its first stage's optimizer and freezing (the first ``sgd`` stage: a probe stage has no learning rate).
        train_x: training images, uint8 (N, C, H, W): a tensor or :class:`~medclf.data.rows.Rows`.
        train_y: class indices (N,), or multi-hot float rows (N, L).
        class_names: the classes (or labels), in output order (for ``balanced`` loss weights).
        seed: seeds the batch order and augmentation (the fold's seed).
        multilabel: targets are multi-hot rows.
        start, end: the first and last ``optimizer.lr`` of the sweep (``start < end``).
        n_steps: mini-batches at most; the training split is cycled when it has fewer batches.
        diverge: stop once the smoothed loss exceeds this many times its lowest value.
        on_step: called after each step with ``(step, lr, loss)`` (a progress bar).

    Raises:
        ConfigError: ``start``, ``end`` or ``n_steps`` out of range, or fewer than two training images.
    """
    check_lr_range(start, end, n_steps)
    if problem := mixup_problem(cfg, multilabel=multilabel):
        raise ConfigError(f"training.mixup: {problem}")
    if len(train_x) < 2:
        raise ConfigError(f"The training split has {len(train_x)} image(s); the range test needs at least 2 "
                          "(a batch normalises over at least two images).")
    with torch_threads(cfg.num_threads):  # training.num_threads holds for the sweep only
        train_x = Rows.of(train_x)
        run = _prepare(model, cfg, train_x, train_y, class_names=class_names, multilabel=multilabel)
        generator = torch.Generator().manual_seed(seed)
        # mixed batches, as the fit trains on (progressive resizing is not: the sweep stands for full-size steps)
        mix = MixBatch(cfg.mixup, n_classes=run.objective.n_outputs, generator=generator) if cfg.mixup else None

        lrs, losses, smoothed, stopped = [], [], [], None
        average, best = 0.0, math.inf
        batches = _cycled_batches(train_y, cfg, multilabel=multilabel, generator=generator)
        for step, lr in enumerate(np.geomspace(start, end, n_steps).tolist()):
            for group, ratio in zip(run.optimizer.param_groups, run.ratios):
                group["lr"] = lr * ratio
            idx, is_copy = next(batches)
            x = augment_batch(train_x.take(idx), is_copy, run.augment, generator)
            y = train_y[idx].to(run.runtime.device, non_blocking=True)
            loss = float(train_step(model, run.objective, run.optimizer, run.scaler, x, y, run.runtime,
                                    batch_step=mix))
            if not math.isfinite(loss):
                stopped = "non-finite"
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            smooth = average / (1 - SMOOTHING ** (step + 1))  # bias correction: the average starts at 0
            lrs.append(lr)
            losses.append(loss)
            smoothed.append(smooth)
            if on_step is not None:
                on_step(step + 1, lr, loss)
            best = min(best, smooth)
            if smooth > diverge * best:
                stopped = "diverged"
                break
        lr_part, loss_part = _suggestion_window(lrs, smoothed, n_steps)
        return LRFindResult(lrs, losses, smoothed, start=start, end=end, n_steps=n_steps, stopped=stopped,
                            steepest=steepest_lr(lr_part, loss_part), valley=valley_lr(lr_part, loss_part))


@dataclass
class _Prepared:
    """What the Trainer would set up before its first step, for the sweep to drive."""

    runtime: Runtime
    optimizer: torch.optim.Optimizer
    ratios: list[float]  # each parameter group's lr / optimizer.lr (head_lr / lr for the head)
    objective: nn.Module
    augment: TrainingAugmentation
    scaler: torch.amp.GradScaler


def _prepare(model: nn.Module, cfg: TrainingConfig, train_x: Rows, train_y: torch.Tensor, *,
             class_names: Sequence[str], multilabel: bool) -> _Prepared:
    """Device, memory format, first-stage freezing and optimizer, loss, augmentation and scaler, as in
    :meth:`medclf.training.Trainer.fit`; leaves ``model`` in training mode (frozen BatchNorm in eval)."""
    runtime = resolve_runtime(cfg, model)
    model.to(runtime.device)
    if runtime.channels_last and hasattr(model, "to_channels_last"):
        model.to_channels_last()
    stage = next((s for s in fit_stages(cfg) if s.kind == "sgd"), None)  # a probe stage has no learning rate
    if stage is None:
        raise ConfigError("training.stages: every stage is a probe (kind: probe, as in recipe linear_probe), fitted "
                          "by logistic regression without a learning rate, so lr-find has nothing to sweep. Use a "
                          "recipe that trains by gradient (finetune, probe_finetune).")
    frozen_bn = apply_freeze(model, stage.freeze, freeze_batchnorm=stage.freeze_batchnorm)
    optimizer = build_optimizer(model, stage.optimizer)
    objective = build_loss(cfg.loss, class_names=class_names, train_targets=train_y.numpy(),
                           multilabel=multilabel).to(runtime.device)
    augment = training_augmentations(cfg, size_hw=tuple(train_x.shape[-2:]), channels=int(train_x.shape[1]))
    model.train()
    frozen_eval_modules(frozen_bn)
    return _Prepared(runtime=runtime, optimizer=optimizer,
                     ratios=[group["lr"] / stage.optimizer.lr for group in optimizer.param_groups],
                     objective=objective, augment=augment,
                     scaler=torch.amp.GradScaler(enabled=runtime.amp_dtype == torch.float16))


def check_lr_range(start: float, end: float, n_steps: int) -> None:
    """Refuse a sweep that cannot suggest anything (checked before any data is loaded).

    Raises:
        ConfigError: ``start`` and ``end`` are not 0 < start < end, or ``n_steps`` is below 5.
    """
    if not (math.isfinite(start) and start > 0 and math.isfinite(end) and end > start):
        raise ConfigError(f"The learning-rate range must be 0 < start < end (finite); got start {start:g}, "
                          f"end {end:g}. The default range is 1e-7 to 10.")
    if n_steps < 5:
        raise ConfigError(f"The range test needs at least 5 steps to suggest a learning rate; got {n_steps}. "
                          "100 (the default) resolves the curve well.")


def _cycled_batches(
    train_y: torch.Tensor, cfg: TrainingConfig, *, multilabel: bool, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless training batches (indices into the split, copy flags), a fresh epoch plan drawn per pass."""
    while True:
        order, is_copy = training_plan(train_y.numpy(), cfg.oversample, multilabel=multilabel, generator=generator)
        for positions in _batches(order, cfg.batch_size):
            yield order[positions], is_copy[positions]


def _suggestion_window(lrs: list[float], losses: list[float], n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of the curve suggestions are read from: without the first tenth of the planned steps (the
    average is still settling) and the last five (the blow-up), as fastai reads it; all of it when that is
    too short."""
    lr_arr, loss_arr = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    lo, hi = n_steps // 10, len(lrs) - 5
    if hi - lo >= 3:
        return lr_arr[lo:hi], loss_arr[lo:hi]
    return lr_arr, loss_arr


def steepest_lr(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    """The learning rate where ``losses`` falls fastest against log lr (the left end of the steepest segment)."""
    if len(lrs) < 2:
        return None
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return float(lrs[int(np.argmin(slopes))])


def valley_lr(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    """fastai's valley: the middle of the longest descending run of ``losses``, as a learning rate.

    The run is the longest strictly decreasing subsequence (not necessarily contiguous, so noise does not break
    it); it spans from its last point back over its length, and the suggestion lies halfway along that span
    (fastai's index ``start + length // 3 + length // 6``).
    """
    n = len(losses)
    if n < 2:
        return None
    run = np.ones(n, dtype=int)  # run[i]: the longest decreasing subsequence ending at i
    for i in range(1, n):
        higher = losses[:i] > losses[i]
        if higher.any():
            run[i] = run[:i][higher].max() + 1
    last = int(np.argmax(run))
    first = max(last - int(run[last]), 0)
    third = (last - first) / 3
    return float(lrs[first + int(third) + int(third / 2)])
