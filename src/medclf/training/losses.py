"""Loss functions, registered under the names written in ``training.loss.name``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from medclf.config import LossConfig
from medclf.registry import Registry

__all__ = ["LOSSES", "build_loss"]

LossFactory = Callable[[LossConfig], nn.Module]
LOSSES: Registry[LossFactory] = Registry("loss")


@LOSSES.register("cross_entropy")
def cross_entropy(cfg: LossConfig) -> nn.Module:
    """Softmax cross-entropy with optional label smoothing."""
    return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


def build_loss(cfg: LossConfig) -> nn.Module:
    return LOSSES.get(cfg.name)(cfg)
