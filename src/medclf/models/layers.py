"""Networks defined layer by layer (``model.name: layers``), the way small medical-imaging CNNs are published.

Each entry of ``model.layers`` becomes one module; shapes are inferred by passing a dummy image of the data's
size through the layers as they are built, so a ``dense`` after a feature map flattens it and a ``residual``
block knows whether its shortcut needs a 1x1 projection. The output layer (one unit per output) is appended.
``model.width_mult`` scales every conv's filters and every dense layer's units; ``model.insert`` adds layers
at a position, so "two more conv layers" or "twice the feature maps" is one override.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medclf.registry import Registry

__all__ = ["ACTIVATIONS", "LayerNet", "Residual", "build_layers", "expand_layers"]

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
ACTIVATIONS.register("relu")(lambda: nn.ReLU(inplace=True))
ACTIVATIONS.register("leaky_relu")(lambda: nn.LeakyReLU(0.01, inplace=True))
ACTIVATIONS.register("elu")(lambda: nn.ELU(inplace=True))
ACTIVATIONS.register("gelu")(nn.GELU)
ACTIVATIONS.register("silu")(lambda: nn.SiLU(inplace=True))
ACTIVATIONS.register("tanh")(nn.Tanh)
ACTIVATIONS.register("sigmoid")(nn.Sigmoid)


def activation(name: str | None) -> nn.Module:
    """The named activation, or the identity for None."""
    return nn.Identity() if name is None else ACTIVATIONS.get(name)()


class Residual(nn.Module):
    """``activation(body(x) + shortcut(x))``."""

    def __init__(self, body: nn.Module, shortcut: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.body, self.shortcut, self.act = body, shortcut, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class LayerNet(nn.Module):
    """The body (``features``) and the appended output layer (``classifier``), like timm models."""

    def __init__(self, features: nn.Sequential, classifier: nn.Linear) -> None:
        super().__init__()
        self.features, self.classifier = features, classifier

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def expand_layers(
    layers: Sequence[Mapping[str, Any]], *, insert: Mapping[int, Sequence[Mapping[str, Any]]], width_mult: float
) -> list[dict[str, Any]]:
    """The layer list with ``insert`` applied (positions refer to the original list) and widths scaled."""
    out: list[dict[str, Any]] = []
    for i in range(len(layers) + 1):
        out += [dict(layer) for layer in insert.get(i, ())]
        if i < len(layers):
            out.append(dict(layers[i]))
    return [_scale(layer, width_mult) for layer in out]


def _scale(layer: dict[str, Any], mult: float) -> dict[str, Any]:
    layer = dict(layer)
    if layer["type"] == "conv":
        layer["filters"] = max(1, round(layer["filters"] * mult))
    elif layer["type"] == "dense":
        layer["units"] = max(1, round(layer["units"] * mult))
    elif layer["type"] == "residual":
        layer["layers"] = [_scale(sub, mult) for sub in layer["layers"]]
    return layer


def _build(layers: Sequence[Mapping[str, Any]], x: torch.Tensor, where: str) -> tuple[list[nn.Module], torch.Tensor]:
    """Modules for ``layers``, run on the dummy ``x`` as they are built; returns them and the output."""
    modules: list[nn.Module] = []
    for i, spec in enumerate(layers):
        module = _layer(spec, x, f"{where}[{i}]").eval()  # eval: the dummy pass must not touch BatchNorm stats
        try:
            x = module(x)
        except RuntimeError as error:
            raise ValueError(
                f"{where}[{i}] ({spec['type']}) cannot take an input of shape {list(x.shape[1:])}: {error}. "
                "Check the image size and the strides and pools before it."
            ) from None
        modules.append(module)
    return modules, x


def _layer(spec: Mapping[str, Any], x: torch.Tensor, where: str) -> nn.Module:
    kind = spec["type"]
    if kind == "conv":
        if x.dim() != 4:
            raise ValueError(f"{where}: a conv layer needs an image-shaped input, but the input is already flat")
        k = spec["kernel"]
        padding = {"same": k // 2, "valid": 0}.get(spec["padding"], spec["padding"])
        conv = nn.Conv2d(x.shape[1], spec["filters"], k, stride=spec["stride"], padding=padding)
        return nn.Sequential(conv, activation(spec["activation"]))
    if kind in ("maxpool", "avgpool"):
        pool = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
        return pool(spec["size"], stride=spec.get("stride") or spec["size"])
    if kind == "batchnorm":
        return nn.BatchNorm2d(x.shape[1]) if x.dim() == 4 else nn.BatchNorm1d(x.shape[1])
    if kind == "dropout":
        return nn.Dropout(spec["rate"])
    if kind == "flatten":
        return nn.Flatten()
    if kind == "globalpool":
        pool = nn.AdaptiveAvgPool2d(1) if spec["mode"] == "avg" else nn.AdaptiveMaxPool2d(1)
        return nn.Sequential(pool, nn.Flatten())
    if kind == "dense":
        flat = int(x[0].numel())
        dense = nn.Linear(flat, spec["units"])
        return nn.Sequential(*([nn.Flatten()] if x.dim() > 2 else []), dense, activation(spec["activation"]))
    if kind == "residual":
        body, y = _build(spec["layers"], x, f"{where}.layers")
        if y.shape == x.shape:
            shortcut: nn.Module = nn.Identity()
        elif x.dim() == 4 and y.dim() == 4:
            stride = max(1, x.shape[-1] // y.shape[-1])
            shortcut = nn.Conv2d(x.shape[1], y.shape[1], 1, stride=stride)  # 1x1 projection
            if shortcut(x).shape != y.shape:
                raise ValueError(f"{where}: the block maps {list(x.shape[1:])} to {list(y.shape[1:])}, which a 1x1 "
                                 "projection cannot match; keep its spatial size a whole fraction of the input's")
        else:
            raise ValueError(f"{where}: a residual block must keep an image shape (its layers flatten the input)")
        return Residual(nn.Sequential(*body), shortcut, activation(spec["activation"]))
    raise ValueError(f"{where}: unknown layer type {kind!r}")


def build_layers(
    layers: Sequence[Mapping[str, Any]], *, in_chans: int, size_hw: tuple[int, int], n_outputs: int
) -> LayerNet:
    """Build the network for (already expanded) ``layers`` on inputs of ``in_chans`` x ``size_hw``.

    Raises:
        ValueError: a layer cannot take its input (the message names ``model.layers[i]``).
    """
    dummy = torch.zeros(2, in_chans, *size_hw)
    with torch.no_grad():
        modules, out = _build(layers, dummy, "model.layers")
    features = nn.Sequential(*modules, *([nn.Flatten()] if out.dim() > 2 else []))
    net = LayerNet(features, nn.Linear(int(out[0].numel()), n_outputs))
    net.train()
    return net
