"""Optimizers, registered under the names written in ``training.optimizer.name``.

Weight decay applies to weights only: biases and normalisation parameters are not decayed (timm's
``param_groups_weight_decay``), which is what the fine-tuning recipes this project follows assume.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

from medclf.config import OptimizerConfig
from medclf.registry import Registry

__all__ = ["OPTIMIZERS", "build_optimizer"]

OptimizerFactory = Callable[[list[dict], OptimizerConfig], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Stochastic gradient descent with momentum (and Nesterov momentum when asked)."""
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


@OPTIMIZERS.register("adam")
def adam(groups: list[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Adam (L2 penalty folded into the gradient, as torch.optim.Adam does)."""
    return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """AdamW: Adam with decoupled weight decay."""
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The configured optimizer over the model's trainable parameters."""
    groups = param_groups_weight_decay(model, weight_decay=cfg.weight_decay)
    return OPTIMIZERS.get(cfg.name)(groups, cfg)
