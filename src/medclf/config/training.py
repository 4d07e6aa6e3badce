"""The ``training`` section: recipe, optimizer, schedule, loss, augmentation, imbalance, early stopping, stages.

Names of registered components (optimizer, scheduler, loss and the keys it reads, augmentation, monitored
metric) are checked by :func:`medclf.experiments.validation.check_config`, above the registries they need.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from medclf.config._base import _Section
from medclf.registry import closest


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


class SchedulerConfig(_Section):
    name: str = "onecycle"
    pct_start: float = Field(0.25, gt=0, lt=1)  # onecycle: fraction of steps spent warming up
    warmup_epochs: int = Field(0, ge=0)  # cosine: linear warm-up epochs
    min_lr: float = Field(0.0, ge=0)  # cosine: final learning rate
    step_size: int = Field(10, ge=1)  # step: epochs between decays
    gamma: float = Field(0.1, gt=0, le=1)  # step: factor applied every step_size epochs
    factor: float = Field(0.1, gt=0, lt=1)  # plateau: factor applied when the monitor stalls
    patience: int = Field(3, ge=0)  # plateau: epochs without improvement before a decay


PerClass = Union[list[float], dict[str, float]]


class LossConfig(_Section):
    name: str = "cross_entropy"
    label_smoothing: float = Field(0.1, ge=0, lt=1)  # cross_entropy, focal, bce
    class_weights: Literal["balanced"] | PerClass | None = None  # cross_entropy, focal, bce: per-class weights
    alpha: float | Literal["balanced"] | PerClass | None = None  # focal: class weighting (null: none)
    gamma: float = Field(2.0, ge=0)  # focal: focusing exponent (0: cross-entropy)
    pos_weight: float | Literal["balanced"] | PerClass | None = None  # bce: weight of positive targets


class AugmentationConfig(_Section):
    presets: list[str] = ["hflip"]  # applied in order to each training batch
    params: dict[str, dict[str, dict[str, Any]]] = {}  # {preset: {transform: {argument: value}}} overrides
    transforms: list[dict[str, Any]] = []  # [{name: <torchvision.transforms.v2 class>, <argument>: value}]


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


class FreezeLastN(_Section):
    last_n: int = Field(ge=0)  # train only the last N layers of the backbone (and the head)


Freeze = Union[Literal["none", "backbone"], FreezeLastN]


class StageConfig(_Section):
    """One stage of staged fine-tuning; unset keys take the training section's values."""

    kind: Literal["sgd", "probe"] = "sgd"  # probe: the head fitted by logistic regression on frozen features
    epochs: int = Field(ge=1)
    freeze: Freeze = "none"
    freeze_batchnorm: bool = False
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()

    @model_validator(mode="after")
    def _probe_is_one_fit(self) -> StageConfig:
        # a probe is one convex fit of the last linear layer on the frozen backbone's features: more epochs or a
        # trainable backbone would silently mean nothing
        if self.kind == "probe" and (self.epochs != 1 or self.freeze != "backbone"):
            raise ValueError(
                f"a probe stage (kind: probe) fits the head once on the frozen backbone: it takes epochs: 1 and "
                f"freeze: backbone (their defaults there), got epochs: {self.epochs}, freeze: {self.freeze!r}. "
                "Remove the two keys, or add an sgd stage after it to train more"
            )
        return self


class ProbeConfig(_Section):
    """The linear probe (a ``kind: probe`` stage): scikit-learn's LogisticRegressionCV on frozen features."""

    cs: int = Field(10, ge=1)  # candidate inverse regularisation strengths, log-spaced from 1e-4 to 1e4
    inner_folds: int = Field(5, ge=2)  # stratified folds of the training rows that choose C
    max_iter: int = Field(2000, ge=1)  # the solver's iteration limit per fit


class EmaConfig(_Section):
    """An exponential moving average of the weights (timm's ModelEmaV3), validated and saved in their place."""

    decay: float = Field(0.999, ge=0, lt=1)  # the average's decay per optimizer step (0: the raw weights)
    warmup: bool = True  # ramp the decay up from 0 over the first steps of each stage (timm's use_warmup)


class MixupConfig(_Section):
    """Mixup / CutMix of training batches (timm's Mixup): mixed images, soft targets."""

    mixup_alpha: float = Field(0.2, ge=0)  # Beta(alpha, alpha) of the mixing weight; 0: no mixup
    cutmix_alpha: float = Field(0.0, ge=0)  # Beta(alpha, alpha) of the pasted box's area; 0: no cutmix
    prob: float = Field(1.0, gt=0, le=1)  # the chance a batch is mixed at all
    switch_prob: float = Field(0.5, ge=0, le=1)  # with both alphas: the chance a mixed batch uses cutmix

    @model_validator(mode="after")
    def _one_alpha(self) -> MixupConfig:
        if self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            raise ValueError("mixup_alpha and cutmix_alpha are both 0, which mixes nothing: set one above 0, "
                             "or training.mixup: null to turn mixing off")
        return self


class ProgressiveResizeConfig(_Section):
    """Train the first part of each stage on smaller images (validation is always at full size)."""

    start_scale: float = Field(0.5, gt=0, le=1)  # the first epoch's side length, as a fraction of the full one
    until: float = Field(0.5, gt=0, le=1)  # fraction of each stage's epochs over which the size grows to full


# A recipe is a named set of training defaults; keys the user writes win. "finetune" is what measured best on
# CPU (AdamW + one-cycle + label smoothing + flips); the others reproduce the plain recipes of older notebooks.
RECIPES: dict[str, dict[str, Any]] = {
    # finetune, or probe_finetune for a pretrained backbone on a small training split: picked per fold, once the
    # data is loaded (medclf.experiments.auto_recipe); here it merges nothing, as finetune
    "auto": {},
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
    # the head fitted by logistic regression on the frozen backbone's pooled features (no augmentation: the
    # features are computed once)
    "linear_probe": {
        "stages": [{"kind": "probe"}],
        "loss": {"label_smoothing": 0.0},
        "augmentation": {"presets": []},
    },
    # the probe's head, then the whole model fine-tuned gently from it for the rest of training.epochs (LP-FT):
    # BatchNorm kept in eval mode, since the probe was fitted on features normalised by the running statistics
    # and batch statistics took its training loss from 0.12 to 2.7 before a single step; the backbone at a tenth
    # of the head's rate; no label smoothing, whose pull on the probe's confident margins undoes it
    # (docs/small-data.md has the measurements)
    "probe_finetune": {
        "stages": [{"kind": "probe"}, {"freeze": "none", "freeze_batchnorm": True}],
        "optimizer": {"lr": 1e-4, "head_lr": 1e-3},
        "loss": {"label_smoothing": 0.0},
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


class TrainingConfig(_Section):
    recipe: str = "auto"  # named defaults for the keys below; see RECIPES
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
    probe: ProbeConfig = ProbeConfig()  # the fit of a probe stage (kind: probe)
    monitor: str = "val_loss"  # the best epoch's weights are kept: val_<metric> or val_loss
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 autocast on CUDA, fp32 on CPU
    channels_last: Literal["auto"] | bool = "auto"  # auto: on CUDA, or for depthwise-conv models on CPU
    compile: bool = False  # torch.compile the model in place (a one-off compile per shape; changes numerics)
    num_threads: int | None = Field(None, ge=1)  # CPU threads; default: torch's choice
    ema: EmaConfig | None = None  # weight EMA ({decay, warmup} or a decay); null: off
    mixup: MixupConfig | None = None  # mixup / cutmix of training batches; null: off
    progressive_resize: ProgressiveResizeConfig | None = None  # smaller training images early on; null: off

    @field_validator("ema", mode="before")
    @classmethod
    def _ema_shorthand(cls, v: Any) -> Any:
        # ema: 0.999 reads as {decay: 0.999}; bool is excluded, as ema: true would read as a decay of 1
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return {"decay": v}
        return v

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        recipe = data.get("recipe", "auto")
        if recipe not in RECIPES:
            hint = closest(str(recipe), list(RECIPES))
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise ValueError(f"unknown recipe {recipe!r}.{did_you_mean} Recipes: {', '.join(RECIPES)}")
        data = _fill_recipe_epochs(recipe, _deep_merge(RECIPES[recipe], data), written=data)
        stopping = data.get("early_stopping")
        if isinstance(stopping, dict) and stopping.get("monitor") and "monitor" not in data:
            data["monitor"] = stopping["monitor"]  # one monitored value picks the kept epoch and stops the fit
        return _resolve_stages(data)

    @model_validator(mode="after")
    def _one_monitor(self) -> TrainingConfig:
        es = self.early_stopping
        if es.monitor and es.monitor != self.monitor:
            raise ValueError(
                f"early_stopping.monitor ({es.monitor}) differs from monitor ({self.monitor}): the epoch whose "
                "weights are kept and the one early stopping waits on must be judged by the same value. Set "
                "one of them (the other follows) or set both to the same value."
            )
        return self


def _fill_recipe_epochs(recipe: str, data: dict[str, Any], *, written: dict[str, Any]) -> dict[str, Any]:
    """A recipe's stage without ``epochs`` gets what the others leave of ``training.epochs``, so the epochs a
    user writes stay the fit's total (probe_finetune: 1 probe epoch, then epochs - 1 of fine-tuning)."""
    if "stages" in written or not isinstance(data.get("stages"), list):
        return data  # the user's own stages: each states its epochs
    stages = [dict(s) for s in data["stages"]]
    for stage in stages:
        if stage.get("kind") == "probe":
            stage.setdefault("epochs", 1)
    total = data.get("epochs", TrainingConfig.model_fields["epochs"].default)
    fixed = sum(s["epochs"] for s in stages if "epochs" in s)
    open_ = [s for s in stages if "epochs" not in s]
    if open_ and isinstance(total, int):
        if total - fixed < len(open_):
            raise ValueError(f"recipe {recipe!r} trains {fixed} epoch(s) before fine-tuning; epochs: {total} "
                             f"leaves none to fine-tune. Write epochs of at least {fixed + len(open_)}")
        for stage in open_:
            stage["epochs"] = (total - fixed) // len(open_)
    return dict(data, stages=stages)


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
        if stage.get("kind") == "probe":
            stage.setdefault("epochs", 1)
            stage.setdefault("freeze", "backbone")  # whatever training.freeze says: a probe reads frozen features
        stage.setdefault("freeze", data.get("freeze", "none"))
        stage.setdefault("freeze_batchnorm", data.get("freeze_batchnorm", False))
        resolved.append(stage)
    epochs = [s.get("epochs") for s in resolved if isinstance(s, dict)]
    out = dict(data, stages=resolved)
    if all(isinstance(e, int) for e in epochs):
        out["epochs"] = sum(epochs)
    return out

