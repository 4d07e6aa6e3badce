"""Freezing rules for fine-tuning: train everything, only the head, or the head and the last N layers.

A *layer* is a leaf module that owns parameters (a convolution, a BatchNorm, a linear layer), counted in the
order the network defines them, as Keras counts ``model.layers``; the head is never frozen. A frozen layer's
parameters stop receiving gradients, and a frozen BatchNorm also stops updating its running statistics (it
runs in eval mode during training). ``freeze_batchnorm`` freezes every BatchNorm, trained part included, which
is the usual advice when fine-tuning on small batches.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["apply_freeze", "frozen_eval_modules"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def apply_freeze(model: Any, rule: Any, *, freeze_batchnorm: bool = False) -> list[nn.Module]:
    """Set ``requires_grad`` on ``model`` (a :class:`medclf.models.Classifier`) by ``rule``.

    Args:
        model: the classifier; its ``backbone_modules()`` are the layers that can be frozen.
        rule: ``"none"``, ``"backbone"``, or an object with ``last_n`` (keep the last N layers trainable).
        freeze_batchnorm: also freeze the BatchNorm layers that ``rule`` leaves trainable.

    Returns:
        The frozen BatchNorm modules, which :func:`frozen_eval_modules` keeps in eval mode while training.
    """
    for p in model.parameters():
        p.requires_grad_(True)
    layers = model.backbone_modules()
    if rule == "none":
        n_trainable = len(layers)
    elif rule == "backbone":
        n_trainable = 0
    else:
        n_trainable = min(int(rule.last_n), len(layers))
    frozen = layers[: len(layers) - n_trainable]
    if freeze_batchnorm:
        frozen += [m for m in layers[len(layers) - n_trainable:] if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for module in frozen:
        for p in module.parameters(recurse=False):
            p.requires_grad_(False)
    return [m for m in frozen if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def frozen_eval_modules(modules: list[nn.Module]) -> None:
    """Put frozen BatchNorm layers back in eval mode (call after ``model.train()``)."""
    for module in modules:
        module.eval()


def describe_rule(rule: Any) -> str:
    """``none``, ``backbone`` or ``last_n=N``, for logs."""
    return rule if isinstance(rule, str) else f"last_n={rule.last_n}"
