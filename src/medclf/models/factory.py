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
from timm.layers import SelectAdaptivePool2d
from torch import nn

from medclf.config import ModelConfig
from medclf.errors import ModelError
from medclf.models.layers import activation, build_layers, expand_layers
from medclf.models.pretrained import resolve_pretrained_weights

__all__ = ["Classifier", "Head", "InputNorm", "build_model", "count_parameters", "model_from_spec"]

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


class Head(nn.Module):
    """Global pooling, optional BatchNorm, hidden dense layers, dropout, and the output layer."""

    def __init__(self, n_features: int, n_outputs: int, cfg: dict[str, Any], drop_rate: float) -> None:
        super().__init__()
        self.pool = SelectAdaptivePool2d(pool_type=cfg["pool"], flatten=True)
        layers: list[nn.Module] = [nn.BatchNorm1d(n_features)] if cfg["batchnorm"] else []
        width = n_features
        for units in cfg["hidden"]:
            layers += [nn.Linear(width, units), activation(cfg["activation"]), nn.Dropout(cfg["dropout"])]
            width = units
        layers += [nn.Dropout(drop_rate), nn.Linear(width, n_outputs)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # tokens (vision transformers): average them
            x = x.mean(dim=1)
        elif x.dim() == 4:
            x = self.pool(x)
        return self.layers(x)


class Classifier(nn.Module):
    """``head(net(norm(x)))`` with the memory format the net runs fastest in.

    With a custom :class:`Head`, ``net`` yields its feature map (timm's ``forward_features``); otherwise ``net``
    is the whole network and its own classifier is the head.
    """

    def __init__(self, net: nn.Module, norm: InputNorm, spec: dict[str, Any], head: Head | None = None) -> None:
        super().__init__()
        self.norm = norm
        self.net = net
        self.head = head
        self.spec = spec
        self.memory_format = torch.contiguous_format

    def to_channels_last(self) -> Classifier:
        self.net.to(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last
        return self

    def head_module(self) -> nn.Module:
        """The layers that map features to outputs (trained with ``head_lr``, never frozen)."""
        return self.head if self.head is not None else self.net.get_classifier()

    def backbone_modules(self) -> list[nn.Module]:
        """The leaf modules owning parameters outside the head, input to output: the layers that freezing counts."""
        head = {id(p) for p in self.head_module().parameters()}
        return [
            m for m in self.net.modules()
            if not list(m.children()) and any(True for _ in m.parameters(recurse=False))
            and not any(id(p) in head for p in m.parameters(recurse=False))
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x).contiguous(memory_format=self.memory_format)
        if self.head is not None:
            return self.head(self.net.forward_features(x))
        return self.net(x)


def count_parameters(model: nn.Module) -> dict[str, float]:
    """Total and trainable parameter counts, and the size of the weights in MB."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return {"total": total, "trainable": trainable, "size_mb": round(size / 2**20, 3)}


def _create(name: str, **kwargs: Any) -> nn.Module:
    """timm.create_model, with an unknown keyword reported against the config key that set it."""
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as error:
        key = "model.drop_path_rate" if "drop_path_rate" in str(error) else "model.kwargs"
        raise ModelError(
            f"{key}: timm's {name!r} does not accept these arguments ({error}). Remove the key, or see "
            f"the signature of the architecture's model class in timm."
        ) from None


def _timm_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(spec.get("kwargs", {}), drop_rate=spec.get("drop_rate", 0.0))
    if spec.get("drop_path_rate") is not None:
        kwargs["drop_path_rate"] = spec["drop_path_rate"]
    return kwargs


def _attach_head(net: nn.Module, spec: dict[str, Any]) -> Head | None:
    """Replace timm's classifier by a :class:`Head` when the spec has one (else size timm's to n_classes)."""
    if spec.get("head") is None:
        net.reset_classifier(spec["n_classes"])
        return None
    net.reset_classifier(0)
    return Head(net.num_features, spec["n_classes"], spec["head"], spec.get("drop_rate", 0.0))


def _assemble(spec: dict[str, Any]) -> Classifier:
    repeat = spec["model_in_chans"] if spec["in_chans"] == 1 and spec["model_in_chans"] > 1 else 1
    norm = InputNorm(spec["mean"], spec["std"], repeat)
    if spec.get("kind") == "layers":
        net = build_layers(spec["layers"], in_chans=spec["in_chans"], size_hw=tuple(spec["size_hw"]),
                           n_outputs=spec["n_classes"])
        return Classifier(net, norm, spec)
    net = _create(spec["architecture"], in_chans=spec["model_in_chans"], **_timm_kwargs(spec))
    return Classifier(net, norm, spec, _attach_head(net, spec))


def build_model(
    cfg: ModelConfig, *, in_chans: int, n_classes: int, size_hw: tuple[int, int] = (64, 64)
) -> Classifier:
    """Create the study's model, loading pretrained weights when asked.

    Args:
        cfg: the ``model`` section of the config.
        in_chans: channels of the data (1 or 3).
        n_classes: number of outputs (classes; 1 for a binary head trained with bce).
        size_hw: the images' (height, width); layer-by-layer networks are sized for it.

    Raises:
        ModelError: the architecture rejects an argument, or a layer-by-layer network cannot take the input.
    """
    spec: dict[str, Any] = {
        "kind": "timm",
        "architecture": cfg.name,
        "n_classes": n_classes,
        "in_chans": in_chans,
        "drop_rate": cfg.drop_rate,
        "drop_path_rate": cfg.drop_path_rate,
        "kwargs": dict(cfg.kwargs),
        "head": None if cfg.head is None else cfg.head.model_dump(mode="json"),
        "pretrained": None,
    }
    if cfg.name == "layers":
        layers = expand_layers(
            [layer.model_dump(mode="json") for layer in cfg.layers],
            insert={k: [layer.model_dump(mode="json") for layer in v] for k, v in cfg.insert.items()},
            width_mult=cfg.width_mult,
        )
        spec |= {"kind": "layers", "layers": layers, "size_hw": list(size_hw), "model_in_chans": in_chans,
                 "mean": [SCRATCH_MEAN] * in_chans, "std": [SCRATCH_STD] * in_chans}
        try:
            return _assemble(spec)
        except ValueError as error:
            raise ModelError(str(error)) from None
    if cfg.pretrained is False:
        spec |= {"model_in_chans": in_chans, "mean": [SCRATCH_MEAN] * in_chans, "std": [SCRATCH_STD] * in_chans}
        return _assemble(spec)
    net = _create(cfg.name, **_timm_kwargs(spec))
    spec["pretrained"] = resolve_pretrained_weights(net, cfg.name, cfg.pretrained)
    data_cfg = net.pretrained_cfg
    model_in_chans = int(data_cfg.get("input_size", (3,))[0])
    spec |= {"model_in_chans": model_in_chans, "mean": list(data_cfg["mean"]), "std": list(data_cfg["std"])}
    repeat = model_in_chans if in_chans == 1 and model_in_chans > 1 else 1
    head = _attach_head(net, spec)
    return Classifier(net, InputNorm(spec["mean"], spec["std"], repeat), spec, head)


def model_from_spec(spec: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None) -> Classifier:
    """Rebuild a saved classifier from its ``model.json`` spec and (optionally) its weights."""
    model = _assemble(spec)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model
