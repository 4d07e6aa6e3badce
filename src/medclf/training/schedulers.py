"""Learning-rate schedules, registered under the names written in ``training.scheduler.name``.

Every schedule steps once per batch (``scheduler.step()`` after ``optimizer.step()``), so a schedule's shape
does not depend on the number of batches in an epoch, except ``plateau``, which can only decide at the end of
an epoch, from the monitored value. :class:`LRSchedule` hides the difference from the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

from medclf.config import SchedulerConfig
from medclf.registry import Registry

__all__ = ["SCHEDULERS", "LRSchedule", "build_scheduler"]

SchedulerFactory = Callable[
    [torch.optim.Optimizer, SchedulerConfig, int, int, str], LRScheduler | ReduceLROnPlateau | None
]
SCHEDULERS: Registry[SchedulerFactory] = Registry("scheduler")


@SCHEDULERS.register("none")
def constant(optimizer, cfg, epochs, steps_per_epoch, mode) -> None:
    """A constant learning rate."""
    return None


@SCHEDULERS.register("onecycle")
def onecycle(optimizer, cfg, epochs, steps_per_epoch, mode) -> LRScheduler | None:
    """One-cycle: warm up from lr/25 to the configured lr over ``pct_start`` of training, then anneal (cosine).

    Momentum (SGD) or beta1 (Adam) cycles between 0.95 and 0.85 as in fastai's recipe. Runs of fewer than
    4 steps have no room for a cycle and keep a constant learning rate.
    """
    total = epochs * steps_per_epoch
    if total < 4:
        return None
    # torch divides by (warm-up steps - 1): keep at least two warm-up steps
    pct_start = min(max(cfg.pct_start, 2 / total), 1 - 2 / total)
    max_lr = [group["lr"] for group in optimizer.param_groups]
    # cycle SGD momentum or Adam's beta1; optimizers without momentum (adagrad, adadelta, rmsprop at 0) keep theirs
    cycle = "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0) > 0
    return OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=pct_start, cycle_momentum=cycle)


@SCHEDULERS.register("cosine")
def cosine(optimizer, cfg, epochs, steps_per_epoch, mode) -> LRScheduler:
    """Linear warm-up for ``warmup_epochs``, then cosine decay to ``min_lr``."""
    total = max(1, epochs * steps_per_epoch)
    warmup = cfg.warmup_epochs * steps_per_epoch

    def factor_for(base: float) -> Callable[[int], float]:
        floor = min(1.0, cfg.min_lr / base) if base > 0 else 0.0  # every group (head_lr too) ends at min_lr

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        return factor

    return LambdaLR(optimizer, [factor_for(group["lr"]) for group in optimizer.param_groups])


@SCHEDULERS.register("step")
def step(optimizer, cfg, epochs, steps_per_epoch, mode) -> LRScheduler:
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs."""
    every = cfg.step_size * max(1, steps_per_epoch)
    return LambdaLR(optimizer, lambda s: cfg.gamma ** (s // every))


@SCHEDULERS.register("plateau")
def plateau(optimizer, cfg, epochs, steps_per_epoch, mode) -> ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement of the monitor."""
    return ReduceLROnPlateau(optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience)


class LRSchedule:
    """One interface over per-batch schedules and reduce-on-plateau.

    Args:
        scheduler: a torch scheduler, or None for a constant learning rate.
        monitor: the logged value that plateau watches; mode: whether lower (``min``) or higher is better.
    """

    def __init__(self, scheduler: Any, *, monitor: str, mode: str) -> None:
        self.scheduler, self.monitor = scheduler, monitor

    def after_batch(self) -> None:
        if self.scheduler is not None and not isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step()

    def after_epoch(self, logs: dict[str, Any]) -> None:
        if isinstance(self.scheduler, ReduceLROnPlateau):
            value = logs.get(self.monitor)
            if value is not None and not math.isnan(value):
                self.scheduler.step(value)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: SchedulerConfig,
    *,
    epochs: int,
    steps_per_epoch: int,
    monitor: str = "val_loss",
    mode: str = "min",
) -> LRSchedule:
    """The configured schedule; ``monitor`` and ``mode`` say what ``plateau`` watches."""
    scheduler = SCHEDULERS.get(cfg.name)(optimizer, cfg, epochs, steps_per_epoch, mode)
    return LRSchedule(scheduler, monitor=monitor, mode=mode)
