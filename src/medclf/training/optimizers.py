"""Optimizers, registered under the names written in ``training.optimizer.name``.

Weight decay applies to weights only: biases and normalisation parameters (every parameter of one dimension)
are not decayed, as timm's ``param_groups_weight_decay`` does, which the fine-tuning recipes this project follows
assume. With ``head_lr`` the head's parameters get their own learning rate. Frozen parameters are left out.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medclf.config import OptimizerConfig
from medclf.registry import Registry

__all__ = ["OPTIMIZERS", "build_optimizer", "param_groups"]

OptimizerFactory = Callable[[list[dict], OptimizerConfig], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Stochastic gradient descent with momentum (default 0.9) and Nesterov momentum when asked."""
    momentum = 0.9 if cfg.momentum is None else cfg.momentum
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=momentum, nesterov=cfg.nesterov and momentum > 0)


@OPTIMIZERS.register("adam")
def adam(groups: list[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Adam (L2 penalty folded into the gradient, as torch.optim.Adam does)."""
    return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """AdamW: Adam with decoupled weight decay."""
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


@OPTIMIZERS.register("rmsprop")
def rmsprop(groups: list[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """RMSprop with smoothing ``alpha`` and momentum (default 0)."""
    return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum or 0.0)


@OPTIMIZERS.register("adadelta")
def adadelta(groups: list[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Adadelta with decay ``rho`` (its customary lr is 1.0)."""
    return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.rho, eps=cfg.eps)


@OPTIMIZERS.register("adagrad")
def adagrad(groups: list[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Adagrad."""
    return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps)


def param_groups(model: nn.Module, cfg: OptimizerConfig) -> list[dict]:
    """Trainable parameters in up to four groups: (backbone, head) x (decayed, not decayed), each with its lr."""
    head = model.head_module() if hasattr(model, "head_module") else None
    head_ids = {id(p) for p in head.parameters()} if head is not None and cfg.head_lr is not None else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(".bias")
        groups.setdefault((id(p) in head_ids, no_decay), []).append(p)
    out = []
    for (is_head, no_decay), params in groups.items():
        lr = cfg.head_lr if is_head else cfg.lr
        out.append({"params": params, "lr": lr, "weight_decay": 0.0 if no_decay else cfg.weight_decay})
    return out


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The configured optimizer over the model's trainable parameters."""
    return OPTIMIZERS.get(cfg.name)(param_groups(model, cfg), cfg)
