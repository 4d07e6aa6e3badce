"""The ``model`` section: a timm architecture (with an optional custom head) or a network written layer by layer."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, Field, field_validator, model_validator

from medclf.config._base import UserPath, _Section
from medclf.registry import closest


# -------------------------------------------------------------------------------------------------- model
def _known_activation(v: str | None) -> str | None:
    from medclf.models.layers import ACTIVATIONS

    if v is not None:
        ACTIVATIONS.get(v)
    return v


Activation = Annotated[str | None, AfterValidator(_known_activation)]


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
    kwargs: dict[str, Any] = {}  # extra arguments for timm.create_model, e.g. {output_stride: 8}
    head: HeadConfig | None = None  # null: timm's own classifier
    layers: list[Layer] = []  # model.name: layers: the network, layer by layer
    width_mult: float = Field(1.0, gt=0)  # multiplies every conv's filters and dense layer's units
    insert: dict[int, list[Layer]] = {}  # {position: [layers]}: inserted before layers[position]

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str) -> str:
        import timm

        if v != "layers" and not timm.is_model(v):
            hint = closest(v, timm.list_models())
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise ValueError(
                f"{v!r} is not a timm architecture.{did_you_mean} timm.list_models() lists them; "
                "'layers' builds model.layers"
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

