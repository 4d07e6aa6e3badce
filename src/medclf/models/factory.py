"""Build a classifier from a timm architecture: input normalisation in front, the right number of classes.

The returned :class:`Classifier` takes float images in [0, 1] with the data's channels; it normalises them
the way its weights expect (ImageNet statistics for pretrained models) and repeats grayscale to three
channels when the architecture's pretrained stem expects RGB. Everything needed to rebuild it is in its
``spec`` (saved as ``model.json``), so prediction never needs the study's config.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from medclf.config import ModelConfig
from medclf.errors import ModelError
from medclf.models.pretrained import resolve_pretrained_weights

__all__ = ["Classifier", "InputNorm", "build_model", "count_parameters", "model_from_spec"]

# Images trained from scratch are uint8/255 in [0, 1]; centring them speeds up the first epochs.
SCRATCH_MEAN, SCRATCH_STD = 0.5, 0.25


class InputNorm(nn.Module):
    """(x - mean) / std per channel, after repeating a single input channel ``repeat`` times."""

    def __init__(self, mean: list[float], std: list[float], repeat: int = 1) -> None:
        super().__init__()
        self.repeat = repeat
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.repeat > 1:
            x = x.expand(-1, self.repeat, -1, -1)
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """``net(norm(x))`` with the memory format the net runs fastest in."""

    def __init__(self, net: nn.Module, norm: InputNorm, spec: dict[str, Any]) -> None:
        super().__init__()
        self.norm = norm
        self.net = net
        self.spec = spec
        self.memory_format = torch.contiguous_format

    def to_channels_last(self) -> Classifier:
        self.net.to(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x).contiguous(memory_format=self.memory_format))


def count_parameters(model: nn.Module) -> dict[str, float]:
    """Total and trainable parameter counts, and the size of the weights in MB."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return {"total": total, "trainable": trainable, "size_mb": round(size / 2**20, 3)}


def _create(name: str, **kwargs: Any) -> nn.Module:
    """timm.create_model, with an unknown keyword reported against ``model.kwargs``."""
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as error:
        raise ModelError(
            f"model.kwargs: timm's {name!r} does not accept these arguments ({error}). Remove the key, or see "
            f"the signature of the architecture's model class in timm."
        ) from None


def _assemble(spec: dict[str, Any]) -> Classifier:
    net = _create(
        spec["architecture"],
        num_classes=spec["n_classes"],
        in_chans=spec["model_in_chans"],
        drop_rate=spec.get("drop_rate", 0.0),
        **spec.get("kwargs", {}),
    )
    repeat = spec["model_in_chans"] if spec["in_chans"] == 1 and spec["model_in_chans"] > 1 else 1
    return Classifier(net, InputNorm(spec["mean"], spec["std"], repeat), spec)


def build_model(cfg: ModelConfig, *, in_chans: int, n_classes: int) -> Classifier:
    """Create the study's model, loading pretrained weights when asked.

    Args:
        cfg: the ``model`` section of the config.
        in_chans: channels of the data (1 or 3).
        n_classes: number of output classes.
    """
    spec: dict[str, Any] = {
        "kind": "timm",
        "architecture": cfg.name,
        "n_classes": n_classes,
        "in_chans": in_chans,
        "drop_rate": cfg.drop_rate,
        "kwargs": dict(cfg.kwargs),
        "pretrained": None,
    }
    if cfg.pretrained is False:
        spec |= {"model_in_chans": in_chans, "mean": [SCRATCH_MEAN] * in_chans, "std": [SCRATCH_STD] * in_chans}
        return _assemble(spec)
    net = _create(cfg.name, drop_rate=cfg.drop_rate, **cfg.kwargs)
    spec["pretrained"] = resolve_pretrained_weights(net, cfg.name, cfg.pretrained)
    net.reset_classifier(n_classes)
    data_cfg = net.pretrained_cfg
    model_in_chans = int(data_cfg.get("input_size", (3,))[0])
    spec |= {"model_in_chans": model_in_chans, "mean": list(data_cfg["mean"]), "std": list(data_cfg["std"])}
    repeat = model_in_chans if in_chans == 1 and model_in_chans > 1 else 1
    return Classifier(net, InputNorm(spec["mean"], spec["std"], repeat), spec)


def model_from_spec(spec: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None) -> Classifier:
    """Rebuild a saved classifier from its ``model.json`` spec and (optionally) its weights."""
    model = _assemble(spec)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model
