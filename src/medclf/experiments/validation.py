"""The config boundary: the checks of a parsed config that need a component registry, in one place.

:mod:`medclf.config` is pure pydantic and imports nothing above it (nor torch, timm or Pillow). Whether a name a
user wrote is registered (a timm architecture, loss, optimizer, scheduler, augmentation, layer activation,
monitored metric) is known only to the layers above, so it is checked here, once, by every entry point: the CLI
commands that load a config (run, demo, validate, show-batch, inspect, audit), each variant and trial of a sweep,
and the Python API (:func:`medclf.experiments.run_study`). It runs before any data is read, and its errors read
exactly as :func:`medclf.config.parse_config`'s do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import timm

from medclf.config import Config, ModelConfig, TrainingConfig, load_config, parse_config
from medclf.config.loading import invalid_config
from medclf.data.augmentation import check_augmentation
from medclf.errors import ConfigError
from medclf.evaluation.metrics import MONITORABLE
from medclf.evaluation.multilabel import MULTILABEL_SUMMARY
from medclf.models.layers import activation
from medclf.registry import Registry, closest
from medclf.training.losses import LOSSES
from medclf.training.optimizers import OPTIMIZERS
from medclf.training.schedulers import SCHEDULERS

__all__ = ["check_config", "load_checked_config", "parse_checked_config"]

Problem = tuple[str, str, Any]  # (dotted key, message, the value written)


def check_config(config: Config, *, origin: str = "config") -> None:
    """Check every registered name in ``config``; raise one :class:`ConfigError` listing what is wrong.

    Args:
        config: a config :func:`medclf.config.parse_config` accepted.
        origin: what the config came from (a file, a sweep variant), the first words of the error.

    Raises:
        ConfigError: a name is not registered, or a loss key is set that the chosen loss does not read.
    """
    problems = [*_model_problems(config.model), *_training_problems(config.training)]
    if problems:
        raise invalid_config(origin, problems)


def load_checked_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """:func:`medclf.config.load_config`, then :func:`check_config`: what every command loads a study with."""
    config = load_config(path, overrides)
    check_config(config, origin=str(path))
    return config


def parse_checked_config(data: Any, *, base_dir: Path | None = None, origin: str = "config") -> Config:
    """:func:`medclf.config.parse_config`, then :func:`check_config`."""
    config = parse_config(data, base_dir=base_dir, origin=origin)
    check_config(config, origin=origin)
    return config


# ------------------------------------------------------------------------------------------------ model
def _model_problems(model: ModelConfig) -> Iterator[Problem]:
    if model.name != "layers" and not timm.is_model(model.name):
        hint = closest(model.name, timm.list_models())
        did_you_mean = f" Did you mean {hint!r}?" if hint else ""
        yield ("model.name", f"{model.name!r} is not a timm architecture.{did_you_mean} timm.list_models() "
               "lists them; 'layers' builds model.layers", model.name)
    if model.head is not None:
        yield from _activation_problems("model.head", model.head)
    yield from _layer_problems("model.layers", model.layers)
    for position, layers in model.insert.items():
        yield from _layer_problems(f"model.insert.{position}", layers)


def _layer_problems(where: str, layers: list[Any]) -> Iterator[Problem]:
    for i, layer in enumerate(layers):
        yield from _activation_problems(f"{where}.{i}", layer)
        if layer.type == "residual":
            yield from _layer_problems(f"{where}.{i}.layers", layer.layers)


def _activation_problems(where: str, section: Any) -> Iterator[Problem]:
    name = getattr(section, "activation", None)
    if name is not None:
        try:
            activation(name)  # the layer-activation registry's lookup, which lists the registered names
        except ConfigError as error:
            yield (f"{where}.activation", str(error), name)


# --------------------------------------------------------------------------------------------- training
def _training_problems(training: TrainingConfig) -> Iterator[Problem]:
    yield from _registered("training.optimizer.name", OPTIMIZERS, training.optimizer.name)
    yield from _registered("training.scheduler.name", SCHEDULERS, training.scheduler.name)
    yield from _loss_problems(training)
    yield from _augmentation_problems(training)
    if training.early_stopping.monitor is not None:
        yield from _monitor_problems("training.early_stopping.monitor", training.early_stopping.monitor)
    for i, stage in enumerate(training.stages):
        yield from _registered(f"training.stages.{i}.optimizer.name", OPTIMIZERS, stage.optimizer.name)
        yield from _registered(f"training.stages.{i}.scheduler.name", SCHEDULERS, stage.scheduler.name)
    yield from _monitor_problems("training.monitor", training.monitor)


def _registered(where: str, registry: Registry[Any], name: str) -> Iterator[Problem]:
    try:
        registry.get(name)
    except ConfigError as error:
        yield (where, str(error), name)


def _loss_problems(training: TrainingConfig) -> Iterator[Problem]:
    """An unknown loss; or a key set for a loss that ignores it (an error, not a silent no-op).

    A key's default (a resolved config writes every key) and its off value (0, null) are accepted.
    """
    loss = training.loss
    unknown = list(_registered("training.loss.name", LOSSES, loss.name))
    if unknown or not loss.model_fields_set - {"name"}:
        yield from unknown
        return
    reads = LOSSES.get(loss.name).keys
    off = {"label_smoothing": 0.0}
    fields = type(loss).model_fields
    ignored = sorted(k for k in loss.model_fields_set - {"name"} - reads
                     if getattr(loss, k) not in (fields[k].default, off.get(k)))
    if ignored:
        users = {k: [n for n in LOSSES.names() if k in LOSSES.get(n).keys] for k in ignored}
        detail = "; ".join(f"{k} is read by {', '.join(v) or 'no loss'}" for k, v in users.items())
        them = "it" if len(ignored) == 1 else "them"
        yield ("training.loss", f"loss {loss.name!r} does not read {', '.join(ignored)} ({detail}). Remove {them} "
               f"or choose a loss that uses {them}.", loss.model_dump(exclude_unset=True))


def _augmentation_problems(training: TrainingConfig) -> Iterator[Problem]:
    aug = training.augmentation
    try:
        check_augmentation(aug.presets, aug.params, aug.transforms)
    except ValueError as error:  # ConfigError included: an unknown preset
        yield ("training.augmentation", str(error), aug.model_dump(exclude_unset=True))


def _monitor_problems(where: str, monitor: str) -> Iterator[Problem]:
    metrics = dict.fromkeys([*MONITORABLE, *MULTILABEL_SUMMARY])  # single-label, then multi-label names
    valid = [f"val_{m}" for m in metrics] + ["train_loss"]
    if monitor not in valid:
        hint = closest(monitor, valid)
        did_you_mean = f" Did you mean {hint!r}?" if hint else ""
        yield (where, f"cannot monitor {monitor!r}.{did_you_mean} Choose one of: {', '.join(valid)}", monitor)
