"""The ``model`` section: a timm architecture (with an optional custom head) or a network written layer by layer.

The architecture and activation names are checked against timm and medclf.models.layers by
:func:`medclf.experiments.validation.check_config`; this module imports neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from medclf.config._base import UserPath, _Section

# ----------------------------------------------------------------------------------- timm keyword arguments
# Arguments that timm's create_model, build_model_with_cfg and load_pretrained (timm 1.0) consume to fetch weights
# or their description instead of shaping the network. Each can make timm open a file (and unpickle it, in timm
# releases or torch versions whose torch.load is not weights-only) or reach the network, so neither a config nor
# a received model.json may pass them: weights come only from model.pretrained or a fold's model.safetensors.
TIMM_LOADER_KEYS: dict[str, str] = {
    "pretrained": "makes timm download ImageNet weights",
    "pretrained_cfg": "tells timm which file, URL or hub repository to load weights from",
    "pretrained_cfg_overlay": "tells timm which file, URL or hub repository to load weights from",
    "pretrained_strict": "only matters while timm loads weights",
    "pretrained_filter_fn": "only matters while timm loads weights",
    "pretrained_model_args": "is read from a hub or local-folder model description",
    "checkpoint_path": "makes timm open and unpickle that file",
    "cache_dir": "tells timm where to download weights and read them from",
    "pruned": "makes timm read an architecture description from a file",
    # fields of a pretrained_cfg: a weights location when they reach timm's loader
    "file": "names a weights file for timm to load",
    "url": "names a weights URL for timm to download",
    "hf_hub_id": "names a hub repository for timm to download from",
    "hf_hub_filename": "names a hub file for timm to download",
    "state_dict": "hands timm a state dict to load",
    "custom_load": "selects a model-specific weights loader",
}
# Shaping arguments whose names merely look like a loader's (swin v2: the window size its weights were trained at).
_LOADER_LOOKALIKES = frozenset({"pretrained_window_size", "pretrained_window_sizes"})
_LOADER_WORDS = frozenset({"file", "files", "filename", "url", "urls", "uri", "dir", "hub", "ckpt", "cache", "repo",
                           "revision", "weights"})

# Arguments medclf sets itself (a second value would conflict or be silently overridden), or that turn the
# classifier into something medclf cannot train. Refused in a config only: they cannot make timm load anything.
MEDCLF_SET_KEYS: dict[str, str] = {
    "in_chans": "is set by medclf from data.channels and the weights",
    "num_classes": "is set by medclf from the classes in the data",
    "drop_rate": "has its own key, model.drop_rate",
    "drop_path_rate": "has its own key, model.drop_path_rate",
    "features_only": "turns the network into a feature extractor without a classifier",
    "feature_cls": "turns the network into a feature extractor without a classifier",
    "out_indices": "turns the network into a feature extractor without a classifier",
    "device": "is set by training.device",
    "dtype": "is set by training.precision",
}


def _looks_like_loader(key: str) -> bool:
    """True for names a future timm release would give a loader argument: pretrained_*, hf_*, *_path, *_file..."""
    key = key.lower()
    if key in _LOADER_LOOKALIKES:
        return False
    words = key.split("_")
    return (
        words[0] in ("pretrained", "hf")
        or (words[-1] in ("path", "paths") and not key.endswith("drop_path"))
        or "checkpoint" in words[:-1]  # checkpoint_path, checkpoint_file; use_checkpoint is gradient checkpointing
        or "state_dict" in key
        or bool(_LOADER_WORDS.intersection(words))
    )


def rejected_timm_kwargs(kwargs: Mapping[str, Any], *, prefix: str = "") -> dict[str, str]:
    """The keys of ``kwargs`` that could make timm read a file or the network, each with the reason.

    Nested mappings are searched too (their keys come back dotted, ``block_kwargs.checkpoint_path``). The rule is
    a deny-list of timm's loader arguments plus a name rule for loader arguments timm may add later; an
    allow-list is not workable because every architecture class takes its own arguments (over 700 names in timm
    1.0), and none of those reads a file.
    """
    rejected: dict[str, str] = {}
    for key, value in kwargs.items():
        name = f"{prefix}{key}"
        if key in TIMM_LOADER_KEYS:
            rejected[name] = TIMM_LOADER_KEYS[key]
        elif _looks_like_loader(str(key)):
            rejected[name] = "is named like a timm argument that loads weights from a file or the network"
        if isinstance(value, Mapping):
            rejected |= rejected_timm_kwargs(value, prefix=f"{name}.")
    return rejected


# -------------------------------------------------------------------------------------------------- model
# A layer activation's name (medclf.models.layers); checked against that registry by check_config.
Activation = str | None


class HeadConfig(_Section):
    """The classification head put on a timm backbone's feature map (instead of timm's own classifier)."""

    pool: Literal["avg", "max", "avgmax"] = "avg"  # global pooling; avgmax: the mean of the two
    batchnorm: bool = False  # BatchNorm1d on the pooled features
    hidden: list[Annotated[int, Field(ge=1)]] = []  # widths of hidden dense layers, e.g. [256]
    activation: Activation = "relu"  # after each hidden layer
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # after each hidden layer


# Layer-by-layer networks (model.name: layers). Each entry's `type` selects the layer; the output layer (one unit
# per class, or one for a binary bce head) is appended automatically.
class ConvLayer(_Section):
    type: Literal["conv"]
    filters: int = Field(ge=1)
    kernel: int = Field(3, ge=1)
    stride: int = Field(1, ge=1)
    padding: Literal["same", "valid"] | int = "same"  # same: kernel // 2 on each side
    activation: Activation = "relu"


class PoolLayer(_Section):
    type: Literal["maxpool", "avgpool"]
    size: int = Field(2, ge=1)
    stride: int | None = None  # default: size


class BatchNormLayer(_Section):
    type: Literal["batchnorm"]


class DropoutLayer(_Section):
    type: Literal["dropout"]
    rate: float = Field(0.5, ge=0.0, lt=1.0)


class FlattenLayer(_Section):
    type: Literal["flatten"]


class GlobalPoolLayer(_Section):
    type: Literal["globalpool"]
    mode: Literal["avg", "max"] = "avg"


class DenseLayer(_Section):
    type: Literal["dense"]
    units: int = Field(ge=1)
    activation: Activation = "relu"


class ResidualLayer(_Section):
    """``activation(layers(x) + shortcut(x))``; the shortcut is a 1x1 convolution when the shapes differ."""

    type: Literal["residual"]
    layers: list[Layer] = Field(min_length=1)
    activation: Activation = "relu"


Layer = Annotated[
    Union[ConvLayer, PoolLayer, BatchNormLayer, DropoutLayer, FlattenLayer, GlobalPoolLayer, DenseLayer, ResidualLayer],
    Field(discriminator="type"),
]
ResidualLayer.model_rebuild()
LAYER_TYPES = ("conv", "maxpool", "avgpool", "batchnorm", "dropout", "flatten", "globalpool", "dense", "residual")


class ModelConfig(_Section):
    name: str = "resnet18"  # any timm architecture, or "layers" for model.layers
    pretrained: bool | UserPath = False  # true: installed weights package, then the timm hub; or a file
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)  # dropout before the classifier
    drop_path_rate: float | None = Field(None, ge=0.0, lt=1.0)  # stochastic depth, for timm models that have it
    kwargs: dict[str, Any] = {}  # the architecture's own arguments for timm.create_model, e.g. {output_stride: 8}
    head: HeadConfig | None = None  # null: timm's own classifier
    layers: list[Layer] = []  # model.name: layers: the network, layer by layer
    width_mult: float = Field(1.0, gt=0)  # multiplies every conv's filters and dense layer's units
    insert: dict[int, list[Layer]] = {}  # {position: [layers]}: inserted before layers[position]

    @field_validator("kwargs")
    @classmethod
    def _architecture_arguments_only(cls, v: dict[str, Any]) -> dict[str, Any]:
        refused = rejected_timm_kwargs(v) | {k: MEDCLF_SET_KEYS[k] for k in v if k in MEDCLF_SET_KEYS}
        if refused:
            reasons = "; ".join(f"{key} is not accepted: it {why}" for key, why in refused.items())
            raise ValueError(
                f"{reasons}. model.kwargs takes only the architecture's own arguments (for example "
                "output_stride, global_pool, act_layer); pretrained weights come only from model.pretrained"
            )
        return v

    @model_validator(mode="after")
    def _layers_need_layers(self) -> ModelConfig:
        if self.name == "layers":
            if not self.layers:
                raise ValueError("model.name 'layers' needs model.layers, a list of layers (see docs/config.md)")
            if self.pretrained is not False or self.head is not None or self.drop_path_rate is not None:
                raise ValueError(
                    "model.pretrained, model.head and model.drop_path_rate apply to timm models, not to "
                    "model.name 'layers'"
                )
            bad = [k for k in self.insert if not 0 <= k <= len(self.layers)]
            if bad:
                raise ValueError(f"model.insert positions must be 0..{len(self.layers)}, got {bad}")
        elif self.layers or self.insert or self.width_mult != 1.0:
            raise ValueError("model.layers, model.insert and model.width_mult need model.name: layers")
        return self

