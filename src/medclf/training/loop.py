"""The fit loop: read it top to bottom in :meth:`Trainer.fit`.

Images arrive as one uint8 tensor already decoded and cached (N, C, H, W). Each step gathers a batch by
index, augments it on uint8, converts to float in [0, 1] on the device, and runs forward/backward. There is
no DataLoader and no per-image Python in the hot path: that is what keeps a warm epoch at the speed of pure
compute on a CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medclf.config import TrainingConfig
from medclf.data.augmentation import build_augmentation
from medclf.evaluation.metrics import SUMMARY_METRICS, classification_metrics
from medclf.training.callbacks import BestWeights, Callback
from medclf.training.device import Runtime, resolve_runtime
from medclf.training.losses import build_loss
from medclf.training.optimizers import build_optimizer
from medclf.training.schedulers import build_scheduler

__all__ = ["FitResult", "Trainer", "batch_indices", "predict_proba"]


@dataclass
class FitResult:
    """What one fit produced: the per-epoch history and the epoch whose weights were kept."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float
    train_time_s: float
    runtime: dict[str, Any] = field(default_factory=dict)


def batch_indices(n: int, batch_size: int, *, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Index batches over ``n`` items, shuffled when a generator is given.

    A trailing batch of one image is dropped while training (BatchNorm cannot normalise a single sample).
    """
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = list(order.split(batch_size))
    if generator is not None and len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def _n_train_steps(n: int, batch_size: int) -> int:
    """Batches per training epoch, as :func:`batch_indices` makes them (a lonely last image is dropped)."""
    steps = -(-n // batch_size)
    return steps - 1 if steps > 1 and n % batch_size == 1 else steps


def _to_input(x: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """uint8 batch -> float in [0, 1] on the device (normalisation lives in the model)."""
    return x.to(runtime.device, non_blocking=True).float().div_(255.0)


@torch.no_grad()
def predict_proba(
    model: nn.Module, images: torch.Tensor, *, batch_size: int, runtime: Runtime
) -> np.ndarray:
    """Class probabilities (N, K) float64 of ``images`` (N, C, H, W) uint8, in eval mode."""
    model.eval()
    out = []
    for idx in batch_indices(len(images), batch_size):
        with runtime.autocast():
            logits = model(_to_input(images[idx], runtime))
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    if not out:
        return np.zeros((0, 0))
    return torch.cat(out).double().numpy()


class Trainer:
    """Fits one model on one training split, choosing the best epoch on a validation split.

    Args:
        model: a :class:`medclf.models.Classifier` (or any module taking float images in [0, 1]).
        cfg: the ``training`` section.
        class_names: names of the output classes, for per-class validation metrics.
        seed: seeds batch order and augmentation (model initialisation is seeded by the caller).
        callbacks: extra callbacks (progress, early stopping...), called after the built-in ones.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainingConfig,
        *,
        class_names: Sequence[str],
        seed: int,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.model, self.cfg, self.class_names, self.seed = model, cfg, list(class_names), seed
        self.best = BestWeights(cfg.monitor, cfg.monitor_mode)
        self.callbacks: list[Callback] = [self.best, *callbacks]
        self.should_stop = False  # a callback sets it to end training after the current epoch
        self.steps_per_epoch = 0
        self.runtime: Runtime | None = None
        self.history: list[dict[str, Any]] = []  # one dict per finished epoch, for callbacks

    def fit(
        self, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor
    ) -> FitResult:
        """Train for ``cfg.epochs`` epochs (or until a callback stops it) and keep the best weights."""
        cfg = self.cfg
        runtime = self.runtime = resolve_runtime(cfg, self.model)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.model.to(runtime.device)
        if runtime.channels_last and hasattr(self.model, "to_channels_last"):
            self.model.to_channels_last()
        if runtime.device.type == "cuda":
            train_x = train_x.pin_memory()  # lets the host-to-device copy overlap with compute
        generator = torch.Generator().manual_seed(self.seed)
        self.steps_per_epoch = _n_train_steps(len(train_x), cfg.batch_size)
        optimizer = build_optimizer(self.model, cfg.optimizer)
        scheduler = build_scheduler(optimizer, cfg.scheduler, epochs=cfg.epochs, steps_per_epoch=self.steps_per_epoch)
        loss_fn = build_loss(cfg.loss).to(runtime.device)
        augment = build_augmentation(cfg.augmentation.presets)
        scaler = torch.amp.GradScaler(enabled=runtime.amp_dtype == torch.float16)
        history = self.history = []
        start = time.perf_counter()

        self._call("on_fit_start")
        for epoch in range(1, cfg.epochs + 1):
            epoch_start = time.perf_counter()
            self._call("on_epoch_start", epoch)
            lr = optimizer.param_groups[0]["lr"]
            self.model.train()
            losses = []
            for step, idx in enumerate(batch_indices(len(train_x), cfg.batch_size, generator=generator)):
                x = train_x[idx]
                if augment is not None:
                    x = augment(x, generator)
                y = train_y[idx].to(runtime.device, non_blocking=True)
                with runtime.autocast():
                    loss = loss_fn(self.model(_to_input(x, runtime)), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if scheduler is not None:
                    scheduler.step()
                losses.append(loss.detach())
                self._call("on_batch_end", step, losses[-1])  # a tensor: .item() would sync the GPU
            logs = {"epoch": epoch, "lr": lr, "train_loss": float(torch.stack(losses).mean()) if losses else math.nan}
            logs |= self._validate(val_x, val_y)
            logs["time_s"] = time.perf_counter() - epoch_start
            history.append(logs)
            self._call("on_epoch_end", epoch, logs)
            if self.should_stop:
                break
        self._call("on_fit_end")

        if self.best.best_state is not None:
            self.model.load_state_dict(self.best.best_state)
        return FitResult(
            history=history,
            best_epoch=self.best.best_epoch or len(history),
            best_score=self.best.best_score,
            train_time_s=time.perf_counter() - start,
            runtime=runtime.describe(),
        )

    def _validate(self, val_x: torch.Tensor, val_y: torch.Tensor) -> dict[str, float]:
        if len(val_x) == 0:
            return {}
        probs = predict_proba(self.model, val_x, batch_size=self.cfg.eval_batch_size, runtime=self.runtime)
        metrics = classification_metrics(val_y.numpy(), probs, class_names=self.class_names)
        return {f"val_{name}": metrics[name] for name in SUMMARY_METRICS}

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)
