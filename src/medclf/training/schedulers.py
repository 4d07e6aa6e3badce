"""Learning-rate schedules, registered under the names written in ``training.scheduler.name``.

Every schedule here steps once per batch (``scheduler.step()`` after ``optimizer.step()``), so a schedule's
shape does not depend on the number of batches in an epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from medclf.config import SchedulerConfig
from medclf.registry import Registry

__all__ = ["SCHEDULERS", "build_scheduler"]

SchedulerFactory = Callable[[torch.optim.Optimizer, SchedulerConfig, int, int], LRScheduler | None]
SCHEDULERS: Registry[SchedulerFactory] = Registry("scheduler")


@SCHEDULERS.register("none")
def constant(optimizer, cfg, epochs, steps_per_epoch) -> None:
    """A constant learning rate."""
    return None


@SCHEDULERS.register("onecycle")
def onecycle(optimizer, cfg, epochs, steps_per_epoch) -> LRScheduler | None:
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
    return OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=pct_start)


@SCHEDULERS.register("cosine")
def cosine(optimizer, cfg, epochs, steps_per_epoch) -> LRScheduler:
    """Linear warm-up for ``warmup_epochs``, then cosine decay to ``min_lr``."""
    total = max(1, epochs * steps_per_epoch)
    warmup = cfg.warmup_epochs * steps_per_epoch
    base = optimizer.param_groups[0]["lr"]
    floor = cfg.min_lr / base if base > 0 else 0.0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, factor)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, *, epochs: int, steps_per_epoch: int
) -> LRScheduler | None:
    """The configured per-batch schedule, or None for a constant learning rate."""
    return SCHEDULERS.get(cfg.name)(optimizer, cfg, epochs, steps_per_epoch)
