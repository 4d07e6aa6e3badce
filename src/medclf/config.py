"""The configuration schema: the one description of what a user may write in a study's YAML.

It is validated once, when loaded (:func:`load_config`), and passed inward as typed sections. Unknown keys are
errors with the closest valid key suggested; relative paths are resolved against the config file's folder.
Every key is documented in ``docs/config.md`` (a test keeps the two in step).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from medclf.errors import ConfigError
from medclf.registry import closest

__all__ = [
    "AuditConfig",
    "AugmentationConfig",
    "EarlyStoppingConfig",
    "FreezeLastN",
    "HeadConfig",
    "LAYER_TYPES",
    "StageConfig",
    "CVConfig",
    "Config",
    "CsvSource",
    "DataConfig",
    "EvaluationConfig",
    "FolderSource",
    "FoldsSource",
    "IntensityConfig",
    "LossConfig",
    "ModelConfig",
    "NpzSource",
    "OptimizerConfig",
    "PatientsSource",
    "RECIPES",
    "SchedulerConfig",
    "SplitsSource",
    "SyntheticSource",
    "TrainingConfig",
    "VolumeConfig",
    "config_fingerprint",
    "dump_config",
    "load_config",
    "parse_config",
    "read_yaml",
    "schema_keys",
]


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file's folder (or the working directory)."""
    base = (info.context or {}).get("base_dir")
    value = Path(value).expanduser()
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return Path(os.path.normpath(value.absolute()))


UserPath = Annotated[Path, AfterValidator(_resolve_path)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- data sources
class FolderSource(_Section):
    """A class-per-folder tree: ``root/<class>/<image>``."""

    type: Literal["folder"]
    path: UserPath


class SplitsSource(_Section):
    """A root with split folders, each holding class folders: ``root/<split>/<class>/<image>``."""

    type: Literal["splits"]
    path: UserPath
    train: list[str] = ["train"]  # folder names accepted for each split; the first that exists is used
    val: list[str] = ["val", "valid", "validation"]
    test: list[str] = ["test"]


class NpzSource(_Section):
    """A MedMNIST-style ``.npz`` with ``{train,val,test}_{images,labels}`` arrays."""

    type: Literal["npz"]
    path: UserPath
    class_names: list[str] | None = None  # names for label 0, 1, ...; default "0", "1", ...


class CsvSource(_Section):
    """A CSV manifest with one row per image; paths are relative to the CSV's folder."""

    type: Literal["csv"]
    path: UserPath
    path_column: str = "path"
    label_column: str = "label"
    split_column: str = "split"  # used when the CSV has it: values train, val or test
    patient_column: str = "patient_id"  # used when the CSV has it: images of one patient are grouped
    study_column: str = "study_id"  # used when the CSV has it: study-level evaluation
    fold_column: str = "fold"  # used when the CSV has it: the fold (0, 1, ...) whose held-out part holds the row
    multilabel: bool = False  # label_column holds several labels per image, joined by label_separator
    label_separator: str = "|"
    label_columns: list[str] | None = None  # multi-label as one 0/1 column per label (implies multilabel)


class FoldsSource(_Section):
    """Predefined folds: ``root/Fold<k>/{train,valid,test}/<class>/<image>``; CV uses exactly these folds."""

    type: Literal["folds"]
    path: UserPath


class PatientsSource(_Section):
    """A patient/study tree: ``root/<split>/<body part>/<patient>/<study>_<label>/<image>`` (MURA style)."""

    type: Literal["patients"]
    path: UserPath


class SyntheticSource(_Section):
    """The embedded generator of MRI-like head phantoms (see ``medclf.data.synthetic``)."""

    type: Literal["synthetic"]
    n_patients: int = Field(120, ge=4)
    slices_per_patient: int = Field(8, ge=1)
    image_size: int = Field(64, ge=32)
    seed: int = 0


Source = Annotated[
    Union[FolderSource, SplitsSource, NpzSource, CsvSource, SyntheticSource, FoldsSource, PatientsSource],
    Field(discriminator="type"),
]


class IntensityConfig(_Section):
    """How images deeper than 8 bits (16-bit PNG/TIFF, float TIFF, DICOM, NIfTI) are mapped to 0..255."""

    normalization: Literal["minmax", "percentile", "window"] = "minmax"
    percentiles: tuple[float, float] = (0.5, 99.5)  # percentile: clip to these percentiles, then min-max
    window: tuple[float, float] | None = None  # window: [center, width] in the image's (rescaled) units
    dicom_voi: bool = True  # DICOM: use the file's own window center/width or VOI LUT when it has one

    @model_validator(mode="after")
    def _consistent(self) -> IntensityConfig:
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {list(self.percentiles)}")
        if self.normalization == "window" and (self.window is None or self.window[1] <= 0):
            raise ValueError("normalization 'window' needs window: [center, width] with a positive width")
        return self


class VolumeConfig(_Section):
    """Which 2-D slice of a 3-D volume (NIfTI) becomes the image."""

    axis: int = Field(2, ge=0, le=2)  # the axis sliced across (2: axial for RAS-oriented volumes)
    slice: Literal["middle"] | int = "middle"  # an index along the axis (negative counts from the end)


class DataConfig(_Section):
    source: Source
    image_size: int | tuple[int, int] = 64  # pixels; one number for square, or [height, width]
    channels: Literal[1, 3] = 1  # images are converted to grayscale (1) or RGB (3)
    resize: Literal["resize", "pad"] = "resize"  # pad: keep the aspect ratio, pad with black
    cache_dir: UserPath | None = None  # default: $MEDCLF_CACHE or ~/.cache/medclf
    intensity: IntensityConfig = IntensityConfig()
    volume: VolumeConfig = VolumeConfig()
    on_bad_image: Literal["fail", "skip"] = "fail"  # skip: leave unreadable files out, listed in skipped.csv

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, v: int | tuple[int, int]) -> int | tuple[int, int]:
        sizes = (v, v) if isinstance(v, int) else v
        if min(sizes) < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {v}")
        return v

    @property
    def size_hw(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return (self.image_size, self.image_size) if isinstance(self.image_size, int) else tuple(self.image_size)


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


# ----------------------------------------------------------------------------------------------- training
class OptimizerConfig(_Section):
    name: str = "adamw"
    lr: float = Field(1e-3, gt=0)  # the backbone's learning rate (the whole model's without head_lr)
    head_lr: float | None = Field(None, gt=0)  # the head's learning rate; null: lr
    weight_decay: float = Field(1e-4, ge=0)  # on weights only, never biases or normalisation parameters
    momentum: float | None = Field(None, ge=0)  # sgd (null: 0.9), rmsprop (null: 0)
    nesterov: bool = False  # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    alpha: float = Field(0.99, gt=0, lt=1)  # rmsprop: smoothing of the squared-gradient average
    rho: float = Field(0.9, gt=0, lt=1)  # adadelta
    eps: float = Field(1e-8, gt=0)  # adam, adamw, rmsprop, adadelta, adagrad

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        from medclf.training.optimizers import OPTIMIZERS

        OPTIMIZERS.get(v)
        return v


class SchedulerConfig(_Section):
    name: str = "onecycle"
    pct_start: float = Field(0.25, gt=0, lt=1)  # onecycle: fraction of steps spent warming up
    warmup_epochs: int = Field(0, ge=0)  # cosine: linear warm-up epochs
    min_lr: float = Field(0.0, ge=0)  # cosine: final learning rate
    step_size: int = Field(10, ge=1)  # step: epochs between decays
    gamma: float = Field(0.1, gt=0, le=1)  # step: factor applied every step_size epochs
    factor: float = Field(0.1, gt=0, lt=1)  # plateau: factor applied when the monitor stalls
    patience: int = Field(3, ge=0)  # plateau: epochs without improvement before a decay

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        from medclf.training.schedulers import SCHEDULERS

        SCHEDULERS.get(v)
        return v


PerClass = Union[list[float], dict[str, float]]


class LossConfig(_Section):
    name: str = "cross_entropy"
    label_smoothing: float = Field(0.1, ge=0, lt=1)  # cross_entropy, bce
    class_weights: Literal["balanced"] | PerClass | None = None  # cross_entropy, focal: per-class weights
    alpha: float | Literal["balanced"] | PerClass | None = None  # focal: class weighting (null: none)
    gamma: float = Field(2.0, ge=0)  # focal: focusing exponent (0: cross-entropy)
    pos_weight: float | Literal["balanced"] | PerClass | None = None  # bce: weight of positive targets

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        from medclf.training.losses import LOSSES

        LOSSES.get(v)
        return v


class AugmentationConfig(_Section):
    presets: list[str] = ["hflip"]  # applied in order to each training batch
    params: dict[str, dict[str, dict[str, Any]]] = {}  # {preset: {transform: {argument: value}}} overrides
    transforms: list[dict[str, Any]] = []  # [{name: <torchvision.transforms.v2 class>, <argument>: value}]

    @model_validator(mode="after")
    def _buildable(self) -> AugmentationConfig:
        from medclf.data.augmentation import check_augmentation

        check_augmentation(self.presets, self.params, self.transforms)
        return self


class EarlyStoppingConfig(_Section):
    patience: int | None = Field(None, ge=1)  # epochs without improvement before stopping; null: never stop
    monitor: str | None = None  # a logged value (val_<metric>, val_loss, train_loss); null: training.monitor
    mode: Literal["auto", "min", "max"] = "auto"  # auto: min for losses, max for other metrics
    min_delta: float | str = 0.0  # smallest improvement that counts: absolute, or relative as "10%"
    restore_best: bool = True  # false: keep the last epoch's weights instead of the best monitored epoch's

    @field_validator("min_delta")
    @classmethod
    def _delta(cls, v: float | str) -> float | str:
        if isinstance(v, str):
            text = v.strip()
            try:
                ok = text.endswith("%") and float(text[:-1]) >= 0
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"min_delta must be a number or a percentage such as '10%', got {v!r}")
            return text
        if v < 0:
            raise ValueError(f"min_delta must be at least 0, got {v}")
        return v

    @field_validator("monitor")
    @classmethod
    def _monitorable(cls, v: str | None) -> str | None:
        return v if v is None else _check_monitor(v)


class FreezeLastN(_Section):
    last_n: int = Field(ge=0)  # train only the last N layers of the backbone (and the head)


Freeze = Union[Literal["none", "backbone"], FreezeLastN]


class StageConfig(_Section):
    """One stage of staged fine-tuning; unset keys take the training section's values."""

    epochs: int = Field(ge=1)
    freeze: Freeze = "none"
    freeze_batchnorm: bool = False
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()


# A recipe is a named set of training defaults; keys the user writes win. "finetune" is what measured best on
# CPU (AdamW + one-cycle + label smoothing + flips); the others reproduce the plain recipes of older notebooks.
RECIPES: dict[str, dict[str, Any]] = {
    "finetune": {},
    "sgd": {
        "optimizer": {"name": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0},
        "scheduler": {"name": "none"},
        "loss": {"label_smoothing": 0.0},
        "augmentation": {"presets": []},
    },
    "adam": {
        "optimizer": {"name": "adam", "lr": 1e-4, "weight_decay": 0.0},
        "scheduler": {"name": "none"},
        "loss": {"label_smoothing": 0.0},
        "augmentation": {"presets": []},
    },
}


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _check_monitor(v: str) -> str:
    from medclf.evaluation.metrics import MONITORABLE

    valid = [f"val_{m}" for m in MONITORABLE] + ["train_loss"]
    if v not in valid:
        hint = closest(v, valid)
        did_you_mean = f" Did you mean {hint!r}?" if hint else ""
        raise ValueError(f"cannot monitor {v!r}.{did_you_mean} Choose one of: {', '.join(valid)}")
    return v


class TrainingConfig(_Section):
    recipe: str = "finetune"  # named defaults for the keys below; see RECIPES
    epochs: int = Field(10, ge=1)  # with stages: the sum of the stages' epochs
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    loss: LossConfig = LossConfig()
    augmentation: AugmentationConfig = AugmentationConfig()
    oversample: Literal["none", "duplicate", "augment", "weighted_sampler"] = "none"  # balance training folds
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    freeze: Freeze = "none"  # none | backbone | {last_n: N}
    freeze_batchnorm: bool = False  # keep frozen layers' BatchNorm statistics fixed too
    stages: list[StageConfig] = []  # staged fine-tuning; each stage starts from the best weights so far
    monitor: str = "val_loss"  # the best epoch's weights are kept: val_<metric> or val_loss
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 autocast on CUDA
    channels_last: Literal["auto"] | bool = "auto"  # auto: on CUDA, or for depthwise-conv models on CPU
    num_threads: int | None = Field(None, ge=1)  # CPU threads; default: torch's choice

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        recipe = data.get("recipe", "finetune")
        if recipe not in RECIPES:
            hint = closest(str(recipe), list(RECIPES))
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise ValueError(f"unknown recipe {recipe!r}.{did_you_mean} Recipes: {', '.join(RECIPES)}")
        data = _deep_merge(RECIPES[recipe], data)
        return _resolve_stages(data)

    @field_validator("monitor")
    @classmethod
    def _known_monitor(cls, v: str) -> str:
        return _check_monitor(v)

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        return "min" if self.monitor.endswith("loss") else "max"


def _resolve_stages(data: dict[str, Any]) -> dict[str, Any]:
    """Fill each stage's unset keys from the training section; a stage's ``lr`` sets its optimizer's lr."""
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        return data
    resolved = []
    for stage in stages:
        if not isinstance(stage, dict):
            resolved.append(stage)
            continue
        stage = dict(stage)
        optimizer = _deep_merge(data.get("optimizer") or {}, stage.get("optimizer") or {})
        if "lr" in stage:
            optimizer["lr"] = stage.pop("lr")
        stage["optimizer"] = optimizer
        stage["scheduler"] = _deep_merge(data.get("scheduler") or {}, stage.get("scheduler") or {})
        stage.setdefault("freeze", data.get("freeze", "none"))
        stage.setdefault("freeze_batchnorm", data.get("freeze_batchnorm", False))
        resolved.append(stage)
    epochs = [s.get("epochs") for s in resolved if isinstance(s, dict)]
    out = dict(data, stages=resolved)
    if all(isinstance(e, int) for e in epochs):
        out["epochs"] = sum(epochs)
    return out


# ------------------------------------------------------------------------------------------ cross-validation
class CVConfig(_Section):
    mode: Literal["kfold", "holdout"] = "kfold"  # holdout: use the data's own train/val/test splits
    n_folds: int = Field(5, ge=2)
    val_fraction: float = Field(0.2, gt=0, lt=1)  # inner validation carved from each training fold
    test_fraction: float = Field(0.0, ge=0, lt=1)  # carve a test split when the data has none
    pool: list[Literal["train", "val"]] = ["train"]  # the splits whose images are cross-validated
    grouped: bool = True  # keep every image of a patient on one side of every split (when ids exist)


class EvaluationConfig(_Section):
    """How predictions are scored beyond the image level."""

    patient_aggregation: Literal["mean", "vote"] = "mean"  # how image probabilities become a patient's (study's)
    threshold: Literal["tuned"] | float = 0.5  # multi-label: decision threshold, or tuned per label on val

    @field_validator("threshold")
    @classmethod
    def _in_unit_interval(cls, v: str | float) -> str | float:
        if not isinstance(v, str) and not 0 < v < 1:
            raise ValueError(f"threshold must be 'tuned' or a number between 0 and 1, got {v}")
        return v


class AuditConfig(_Section):
    """The leakage audit run before every study (``RUN_DIR/audit.json``)."""

    leakage: Literal["warn", "fail", "drop_duplicates"] = "warn"
    near_distance: int = Field(4, ge=0, le=64)  # near duplicates: perceptual hashes at most this many bits apart
    near_correlation: float = Field(0.97, ge=-1, le=1)  # ...and 32x32 thumbnails at least this correlated
    near_duplicates: bool = True  # false: only exact duplicates and patient overlap are audited


class Config(_Section):
    name: str = "study"
    seed: int = 0
    data: DataConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    cv: CVConfig = CVConfig()
    audit: AuditConfig = AuditConfig()
    evaluation: EvaluationConfig = EvaluationConfig()


# ------------------------------------------------------------------------------------------------ loading
def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw config dict."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"Override {item!r} is not of the form dotted.key=value (for example training.epochs=3)."
            )
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = _parse_value(raw)
    return data


def _section_fields(loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the section at ``loc`` (a pydantic error location), for suggestions."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None:
            return []
        if part in fields:
            annotation = fields[part].annotation
            model = _first_model(annotation)
        else:
            # a discriminated union puts the tag in the location: find the variant of that type
            variants = [m for m in _TAGGED if part in m.model_fields["type"].annotation.__args__]
            if not variants:
                return []
            model = variants[0]
    return list(getattr(model, "model_fields", {}))


def _first_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _format_errors(error: ValidationError, origin: str) -> str:
    lines = []
    for err in error.errors():
        loc = tuple(err["loc"])
        tag_free = [str(p) for p in loc if not _is_tag(p)]
        where = ".".join(tag_free) or "(top level)"
        if err["type"] == "extra_forbidden":
            valid = [f for f in _section_fields(loc[:-1]) if f != "type"] or _section_fields(loc[:-1])
            hint = closest(str(loc[-1]), valid)
            did_you_mean = f" Did you mean {'.'.join(tag_free[:-1] + [hint])!r}?" if hint else ""
            lines.append(f"{where}: unknown key.{did_you_mean} Valid keys here: {', '.join(valid)}.")
        elif err["type"] == "missing":
            lines.append(f"{where}: required key is missing.")
        else:
            msg = err["msg"].removeprefix("Value error, ").rstrip(".")
            got = repr(err.get("input"))
            lines.append(f"{where}: {msg}." if got in msg else f"{where}: {msg} (got {got}).")
    return f"{origin} is not a valid medclf config: " + " ".join(lines)


_TAGGED = (
    FolderSource, SplitsSource, NpzSource, CsvSource, SyntheticSource, FoldsSource, PatientsSource,
    ConvLayer, PoolLayer, BatchNormLayer, DropoutLayer, FlattenLayer, GlobalPoolLayer, DenseLayer, ResidualLayer,
)


def _is_tag(part: Any) -> bool:
    return isinstance(part, str) and any(part in m.model_fields["type"].annotation.__args__ for m in _TAGGED)


def parse_config(data: Any, *, base_dir: Path | None = None, origin: str = "config") -> Config:
    """Validate a raw dict into a :class:`Config`; errors become one readable :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must be a YAML mapping of sections (data, model, training, cv), got {data!r}.")
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as error:
        raise ConfigError(_format_errors(error, origin)) from None


def read_yaml(path: Path, *, what: str = "Config file") -> Any:
    """The parsed YAML of ``path``; a missing file or bad YAML is a :class:`ConfigError` naming the file."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist.") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a YAML config; relative paths are resolved against its folder."""
    path = Path(path)
    raw = apply_overrides(read_yaml(path) or {}, overrides or [])
    return parse_config(raw, base_dir=path.parent.absolute(), origin=str(path))


def dump_config(config: Config) -> str:
    """The resolved config as YAML (absolute paths, every default written out)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


# Keys that change where or how fast a study runs, not what it computes: a run folder started with one value
# resumes with another (the data itself is checked by its content fingerprint, not its path).
RUNTIME_ONLY_KEYS = (
    "data.cache_dir",
    "data.source.path",
    "training.device",
    "training.num_threads",
    "training.eval_batch_size",
)


def config_fingerprint(config: Config) -> str:
    """A short content hash of what the resolved config computes (stable across key order).

    Keys in :data:`RUNTIME_ONLY_KEYS` are left out, so moving the data or the cache does not invalidate runs.
    """
    data = config.model_dump(mode="json")
    for dotted in RUNTIME_ONLY_KEYS:
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    canonical = json.dumps(data, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


_SAME_KEYS_AS_LAYERS = {"model.insert", "training.stages.optimizer", "training.stages.scheduler"}


def schema_keys() -> set[str]:
    """Every dotted key a user may write (union over data-source variants); docs/config.md lists them all."""
    keys: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            dotted = f"{prefix}{name}"
            keys.add(dotted)
            if dotted in _SAME_KEYS_AS_LAYERS or (model is ResidualLayer and name == "layers"):
                continue  # their keys are those of model.layers, training.optimizer, training.scheduler
            for sub in _models_in(field.annotation):
                walk(sub, dotted + ".")

    walk(Config, "")
    return keys


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()):
        found.extend(_models_in(arg))
    return found
