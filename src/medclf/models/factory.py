"""Build a classifier from a timm architecture: input normalisation in front, the right number of classes.

The returned :class:`Classifier` takes float images in [0, 1] with the data's channels; it normalises them
the way its weights expect (ImageNet statistics for pretrained models) and repeats grayscale to three
channels when the architecture's pretrained stem expects RGB. Everything needed to rebuild it is in its
``spec`` (saved as ``model.json``), so prediction never needs the study's config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from pydantic import ValidationError
from timm.layers import SelectAdaptivePool2d
from torch import nn

from medclf.config import HeadConfig, ModelConfig
from medclf.config.model import rejected_timm_kwargs
from medclf.errors import ConfigError, ModelError
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
        """The modules owning parameters outside the head, input to output: the layers that freezing counts.

        A module counts by the parameters it owns itself, whatever its children: timm's ``BatchNormAct2d`` (the
        BatchNorm of EfficientNet and MobileNet) holds its activation as a child, and a leaf-only rule left every
        such BatchNorm trainable, in train mode, under ``freeze: backbone``.
        """
        head = {id(p) for p in self.head_module().parameters()}
        return [
            m for m in self.net.modules()
            if any(True for _ in m.parameters(recurse=False))
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


# What timm raises for an argument with a wrong name or value (TypeError for an unknown keyword, an assert on
# output_stride, KeyError for an unknown act_layer, ValueError for img_size...). Caught only when the user (or a
# model.json) passed arguments, which are then the cause; without any, the same errors are bugs and keep a traceback.
_ARGUMENT_ERRORS = (TypeError, ValueError, KeyError, AssertionError, RuntimeError, IndexError)


def _create(name: str, kwargs: dict[str, Any], *, user_keys: list[str], origin: str) -> nn.Module:
    """timm.create_model without weights, a failure caused by ``user_keys`` reported against ``origin``.

    Always ``pretrained=False``: weights come only from :func:`resolve_pretrained_weights` or a fold's
    model.safetensors, never from timm's own loader.
    """
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except _ARGUMENT_ERRORS as error:
        if not user_keys:
            raise
        cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if isinstance(error, TypeError):
            where = "model.drop_path_rate" if origin == "model.kwargs" and "drop_path_rate" in str(error) else origin
            raise ModelError(
                f"{where}: timm's {name!r} does not accept these arguments ({cause}). Remove the key, or see "
                f"the signature of the architecture's model class in timm."
            ) from None
        raise ModelError(
            f"{origin}: timm's {name!r} rejects the value of {', '.join(user_keys)} ({cause}). Check the values "
            f"against the architecture's model class in timm, or remove the keys."
        ) from None


def _timm_kwargs(spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The arguments for timm.create_model, and those of them the user chose (the suspects when timm fails)."""
    user = dict(spec.get("kwargs") or {})
    kwargs = dict(user, drop_rate=spec.get("drop_rate", 0.0))
    if spec.get("drop_path_rate") is not None:
        kwargs["drop_path_rate"] = spec["drop_path_rate"]
        user["drop_path_rate"] = spec["drop_path_rate"]
    return kwargs, sorted(user)


def _attach_head(net: nn.Module, spec: dict[str, Any]) -> Head | None:
    """Replace timm's classifier by a :class:`Head` when the spec has one (else size timm's to n_classes)."""
    if spec.get("head") is None:
        net.reset_classifier(spec["n_classes"])
        return None
    net.reset_classifier(0)
    return Head(net.num_features, spec["n_classes"], spec["head"], spec.get("drop_rate", 0.0))


def _assemble(spec: dict[str, Any], *, origin: str = "model.kwargs") -> Classifier:
    repeat = spec["model_in_chans"] if spec["in_chans"] == 1 and spec["model_in_chans"] > 1 else 1
    norm = InputNorm(spec["mean"], spec["std"], repeat)
    if spec.get("kind") == "layers":
        net = build_layers(spec["layers"], in_chans=spec["in_chans"], size_hw=tuple(spec["size_hw"]),
                           n_outputs=spec["n_classes"])
        return Classifier(net, norm, spec)
    kwargs, user_keys = _timm_kwargs(spec)
    net = _create(spec["architecture"], dict(kwargs, in_chans=spec["model_in_chans"]), user_keys=user_keys,
                  origin=origin)
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
    kwargs, user_keys = _timm_kwargs(spec)
    net = _create(cfg.name, kwargs, user_keys=user_keys, origin="model.kwargs")
    spec["pretrained"] = resolve_pretrained_weights(net, cfg.name, cfg.pretrained)
    data_cfg = net.pretrained_cfg
    model_in_chans = int(data_cfg.get("input_size", (3,))[0])
    spec |= {"model_in_chans": model_in_chans, "mean": list(data_cfg["mean"]), "std": list(data_cfg["std"])}
    repeat = model_in_chans if in_chans == 1 and model_in_chans > 1 else 1
    head = _attach_head(net, spec)
    return Classifier(net, InputNorm(spec["mean"], spec["std"], repeat), spec, head)


def model_from_spec(
    spec: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None, *, source: str | Path = "model.json"
) -> Classifier:
    """Rebuild a saved classifier from its ``model.json`` spec and (optionally) its weights.

    The spec may come from someone else's run folder, so it is checked before anything is built: the
    architecture must be registered in the installed timm (no ``hf-hub:`` or ``local-dir:`` source), and no
    keyword argument may make timm read a file or the network. The network is always built without weights;
    ``state_dict`` (a fold's model.safetensors) is the only source of weights.

    Args:
        spec: the parsed model.json.
        state_dict: the weights, loaded strictly (every tensor present, every shape equal).
        source: where the spec came from, named in errors (e.g. ``runs/demo/fold-0/model.json``).

    Raises:
        ModelError: the spec is malformed or refused, or the weights do not fit it.
    """
    _check_spec(spec, source)
    try:
        model = _assemble(spec, origin=f"{source}: kwargs")
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as error:  # a damaged or hand-edited spec
        raise ModelError(
            f"{source} does not describe a model medclf can build ({type(error).__name__}: {error}); it is "
            "damaged or was not written by medclf. Retrain the fold (medclf run resumes) or copy the file again."
        ) from None
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as error:  # missing, unexpected or differently shaped tensors
            # torch's message: a header line, then one line per kind of mismatch naming every tensor
            details = " ".join(line.strip() for line in str(error).strip().splitlines()[1:]) or str(error)
            details = details if len(details) <= 240 else details[:240] + "..."
            raise ModelError(
                f"{source}: the weights saved beside it do not fit the model it describes ({details}); the weights "
                "file is damaged or belongs to another model. Retrain the fold (medclf run resumes) or copy the "
                "fold folder again."
            ) from None
    return model


_SPEC_KEYS = {"timm": ("architecture", "n_classes", "in_chans", "model_in_chans", "mean", "std"),
              "layers": ("layers", "size_hw", "n_classes", "in_chans", "model_in_chans", "mean", "std")}


def _check_spec(spec: Any, source: str | Path) -> None:
    """Refuse a model description that could make timm load anything, or that lacks what building needs."""
    if not isinstance(spec, dict):
        raise ModelError(f"{source} must hold a JSON object describing the model, not a {type(spec).__name__}.")
    kind = spec.get("kind", "timm")
    if kind not in _SPEC_KEYS:
        raise ModelError(f"{source}: kind {kind!r} is not one medclf writes; expected 'timm' or 'layers'.")
    missing = [key for key in _SPEC_KEYS[kind] if key not in spec]
    if missing:
        raise ModelError(
            f"{source} lacks {', '.join(missing)}; it is damaged or was not written by medclf. Retrain the fold "
            "(medclf run resumes) or copy the file again."
        )
    if kind == "layers":
        return
    arch = spec["architecture"]
    if not isinstance(arch, str) or not timm.is_model(arch):
        raise ModelError(
            f"{source}: architecture {arch!r} is not an architecture registered in the installed timm "
            f"{timm.__version__}. medclf builds only registered architectures, never an hf-hub: or local-dir: "
            "source (those make timm read files or the network); a newer timm may know the name."
        )
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ModelError(f"{source}: kwargs must be a JSON object of timm arguments, not {kwargs!r}.")
    refused = rejected_timm_kwargs(kwargs)
    if refused:
        reasons = "; ".join(f"kwargs.{key} {why}" for key, why in refused.items())
        raise ModelError(
            f"{source} is refused: {reasons}. A model.json may only hold the architecture's own arguments; "
            "medclf never lets it make timm read a file or the network, and takes weights only from the fold's "
            "model.safetensors. Remove the key if you trust the rest of the folder, or ask for the run folder again."
        )
    if spec.get("head") is not None:
        try:
            activation(HeadConfig.model_validate(spec["head"]).activation)  # a registered name, as a config's is
        except ValidationError as error:
            raise ModelError(f"{source}: head is not a valid head description ({error.errors()[0]['msg']}).") from None
        except ConfigError as error:
            raise ModelError(f"{source}: head is not a valid head description (Value error, {error}).") from None
