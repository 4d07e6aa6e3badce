"""The config boundary: the checks of a parsed config that need a component registry, in one place.

:mod:`medclf.config` is pure pydantic and imports nothing above it (nor torch, timm or Pillow). Whether a name a
user wrote is registered (a timm architecture, loss, optimizer, scheduler, augmentation, layer activation,
monitored metric) is known only to the layers above, so it is checked here, once, by every entry point: the CLI
commands that load a config (run, demo, validate, show-batch, inspect, audit), each variant and trial of a sweep,
and the Python API (:func:`medclf.experiments.run_study`). So is what the machine and the disk can tell before
training: that ``data.source.path`` exists and has the layout ``data.source.type`` reads (a few folder listings
and a CSV's header line, never the images), that keys do not contradict each other or the layout, and that
``training.device`` exists here. It runs before any data is read, and its errors read exactly as
:func:`medclf.config.parse_config`'s do; a key the study will not use is a :class:`~medclf.errors.ConfigWarning`.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import timm
import torch

from medclf.config import Config, CsvSource, ModelConfig, TrainingConfig, load_config, parse_config
from medclf.config.loading import invalid_config
from medclf.data.augmentation import check_augmentation
from medclf.data.layouts.base import subdirs
from medclf.data.layouts.detect import LAYOUT_SHAPES, detect_layout, fold_folders
from medclf.errors import ConfigError, ConfigWarning
from medclf.evaluation.metrics import MONITORABLE
from medclf.evaluation.multilabel import MULTILABEL_SUMMARY
from medclf.models.layers import activation
from medclf.registry import Registry, closest
from medclf.training.device import compiler_problem, cpu_precision_problem
from medclf.training.loop import compile_problem
from medclf.training.losses import LOSSES
from medclf.training.mixing import mixup_problem
from medclf.training.optimizers import OPTIMIZERS
from medclf.training.schedulers import SCHEDULERS

__all__ = ["available_devices", "check_config", "load_checked_config", "parse_checked_config", "probe_problems"]

Problem = tuple[str, str, Any]  # (dotted key, message, the value written)


def check_config(config: Config, *, origin: str = "config", check_device: bool = True) -> None:
    """Check what can be checked before training; raise one :class:`ConfigError` listing what is wrong.

    Keys the study will not use (a layout or mode ignores them) are each a :class:`~medclf.errors.ConfigWarning`.

    Args:
        config: a config :func:`medclf.config.parse_config` accepted.
        origin: what the config came from (a file, a sweep variant), the first words of the error.
        check_device: check ``training.device`` and ``training.precision`` against this machine; False where the
            study runs elsewhere (a sweep sent to a Ray cluster is validated on its head, which may have no GPU).

    Raises:
        ConfigError: a name is not registered, a loss key is set that the chosen loss does not read, the data
            path is missing or holds another layout than ``data.source.type``, two keys contradict each other,
            or the device is not on this machine.
    """
    problems = [
        *_model_problems(config.model),
        *_training_problems(config.training),
        *_key_problems(config),
        *_resize_problems(config),
        *probe_problems(config),
        *_data_problems(config),
        *(_device_problems(config.training) if check_device else ()),
    ]
    if problems:
        raise invalid_config(origin, problems)


def load_checked_config(path: str | Path, overrides: list[str] | None = None, *, check_device: bool = True) -> Config:
    """:func:`medclf.config.load_config`, then :func:`check_config`: what every command loads a study with."""
    config = load_config(path, overrides)
    check_config(config, origin=str(path), check_device=check_device)
    return config


def parse_checked_config(
    data: Any, *, base_dir: Path | None = None, origin: str = "config", check_device: bool = True
) -> Config:
    """:func:`medclf.config.parse_config`, then :func:`check_config`."""
    config = parse_config(data, base_dir=base_dir, origin=origin)
    check_config(config, origin=origin, check_device=check_device)
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
    if problem := compile_problem(training):
        yield ("training.compile", problem, training.compile)
    if problem := mixup_problem(training):  # a multi-label task is refused by the Trainer, which knows the data
        yield ("training.mixup", problem, training.mixup.model_dump())


def _resize_problems(config: Config) -> Iterator[Problem]:
    """training.progressive_resize with a layer network that flattens a feature map of fixed size."""
    model = config.model
    if config.training.progressive_resize is None or model.name != "layers":
        return
    ordered = [layer for i in range(len(model.layers) + 1)
               for layer in [*model.insert.get(i, []), *model.layers[i:i + 1]]]
    first = next((layer.type for layer in ordered if layer.type in ("globalpool", "flatten", "dense")), None)
    if first in ("flatten", "dense"):
        yield ("training.progressive_resize",
               f"trains on smaller images early on, but this layer network's first {first} layer flattens a "
               "feature map whose size follows the image's, into layers sized for the full image. Put a "
               "globalpool layer before it, or set training.progressive_resize: null",
               config.training.progressive_resize.model_dump())


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


# ------------------------------------------------------------------------------------------------ probe
PROBE_LOSSES = ("cross_entropy", "bce")  # the losses a logistic regression minimises (without focusing, rates)


def probe_problems(config: Config) -> Iterator[Problem]:
    """A probe stage (``training.stages.N.kind: probe``) needs a loss a logistic regression fits and a head whose
    last layer reads the pooled features; on random features it is legal, and warned of."""
    training, model = config.training, config.model
    probes = [i for i, stage in enumerate(training.stages) if stage.kind == "probe"]
    if not probes:
        return
    where = f"training.stages.{probes[0]}.kind"
    if training.loss.name not in PROBE_LOSSES:
        yield ("training.loss.name", f"{training.loss.name!r} has no linear-probe analogue, and {where} is a probe "
               f"(a logistic regression on frozen features). A probe stage takes loss {' or '.join(PROBE_LOSSES)}",
               training.loss.name)
    elif _written(training.loss, "pos_weight"):
        yield ("training.loss.pos_weight", f"a probe stage ({where}) weighs classes only by "
               "training.loss.class_weights; pos_weight has no analogue there. Use class_weights instead",
               training.loss.pos_weight)
    if model.head is not None and model.head.hidden:
        yield ("model.head.hidden", f"a probe stage ({where}) fits the model's last linear layer on the pooled "
               f"features, but hidden layers {model.head.hidden} sit between them. Remove model.head.hidden",
               model.head.hidden)
    if model.pretrained is False:
        # stacklevel 2: check_config's line, as for the cv warnings (shown once when two entry points check)
        warnings.warn(f"model.pretrained: false: the probe stage ({where}) fits a head on the features of a "
                      "randomly initialised backbone, which is legal but rarely useful. Set model.pretrained: true "
                      "(or a weights file) to probe pretrained features.", ConfigWarning, stacklevel=2)


# ------------------------------------------------------------------------------------------ data on disk
def _data_problems(config: Config) -> Iterator[Problem]:
    """``data.source.path`` exists, is a file or a folder as its type needs, and holds no other layout."""
    source = config.data.source
    path: Path | None = getattr(source, "path", None)
    if path is None:  # synthetic: generated in memory
        return
    kind, shape, found = source.type, LAYOUT_SHAPES[source.type], detect_layout(path)
    reads = f"data.source.type {kind!r} reads {shape}"
    # a layout found on disk names the type that would fit: the fix is one word
    fits = "" if found is None else f"; it looks like a {found.type!r} layout ({found.description}): write " \
                                    f"data.source.type: {found.type}"
    if not path.exists():
        yield ("data.source.path", f"{str(path)!r} does not exist; {reads}", str(path))
    elif kind in ("npz", "csv") and path.is_dir():
        yield ("data.source.path", f"{str(path)!r} is a folder, but {reads}{fits or '; give the file'}", str(path))
    elif kind in ("npz", "csv") and path.suffix.lower() != f".{kind}":
        yield ("data.source.path", f"{str(path)!r} is a {path.suffix or 'extension-less'!s} file, but "
               f"{reads}{fits}", str(path))
    elif kind not in ("npz", "csv") and path.is_file():
        yield ("data.source.path", f"{str(path)!r} is a file, but {reads}{fits}", str(path))
    elif found is not None and found.type != kind and not _named_split_folders(source, found.type):
        yield ("data.source.type", f"{kind!r} reads {shape}, but {str(path)!r} looks like a {found.type!r} layout "
               f"({found.description}): write data.source.type: {found.type}", kind)
    elif kind == "folds" and found is None and len(fold_folders(path)) < 2:
        there = ", ".join(p.name for p in subdirs(path)) or "none"
        yield ("data.source.path", f"{str(path)!r} has no Fold<k> folders (folders there: {there}); {reads}",
               str(path))


def _named_split_folders(source: Any, found: str) -> bool:
    """A ``splits`` source whose split folders have names of the user's own (``data.source.train``) that exist:
    class-per-folder-looking children are then the user's splits, not a mistaken type."""
    return source.type == "splits" and found == "folder" and any((source.path / n).is_dir() for n in source.train)


# ---------------------------------------------------------------------------------- keys against keys
def _written(section: Any, key: str) -> bool:
    """Whether the user wrote ``key`` in ``section``, with a value other than its default.

    A resolved config (``medclf validate``'s output, a run folder's config.yaml) writes every key, at its
    default where the user wrote none; a default value is thus no sign the user meant it, and feeding a resolved
    config back must not fail or warn.
    """
    return key in section.model_fields_set and getattr(section, key) != type(section).model_fields[key].default


def _key_problems(config: Config) -> Iterator[Problem]:
    """Keys that contradict each other or the layout: errors here, warnings (:class:`ConfigWarning`) for keys
    the study merely does not use."""
    source, cv = config.data.source, config.cv
    if isinstance(source, CsvSource) and source.label_columns is not None:
        # errors: one of the two keys silently wins, so the study would not read the labels the user thinks
        if _written(source, "label_column"):
            yield ("data.source.label_columns", f"{source.label_columns!r} and data.source.label_column "
                   f"{source.label_column!r} are both set; label_columns (one 0/1 column per label) is read and "
                   "label_column would be ignored. Keep one of the two keys", source.label_columns)
        if _written(source, "multilabel"):
            yield ("data.source.label_columns", f"{source.label_columns!r} already makes the task multi-label; "
                   "data.source.multilabel is for label_column holding several labels joined by label_separator, "
                   "and would be ignored. Remove data.source.multilabel (or label_columns)", source.label_columns)
    predefined = _predefined_folds(config)
    if predefined is not None and _written(cv, "n_folds"):
        # an error, not a warning: the study would train every predefined fold (ten, not the two of a smoke
        # test) and a key does what was meant
        yield ("cv.n_folds", f"{cv.n_folds} is not used: the study runs every one of the data's own folds "
               f"({predefined}). To run some of them set cv.folds (medclf run --folds 0,3); remove cv.n_folds",
               cv.n_folds)
    if source.type == "folds" and cv.resplit_by_patient:
        # an error: the leak it is meant to fix would stay
        yield ("cv.resplit_by_patient", "true re-splits the data's own train/val/test splits, but predefined fold "
               "folders (data.source.type: folds) are fixed by design. Remove the key, or give the images with "
               "their splits (type: splits or csv)", True)
    for key, why in _ignored_keys(config):
        # warnings: the study still computes what the data defines; a shared base config may carry such keys
        # stacklevel 2 is check_config's line whatever calls it: the CLI and run_study check the same config,
        # and Python's default filter then shows a warning once
        warnings.warn(f"cv.{key}: {getattr(cv, key)!r} is not used {why}. Remove the key.", ConfigWarning,
                      stacklevel=2)


def _predefined_folds(config: Config) -> str | None:
    """What defines the data's own folds (for a message), or None: a ``folds`` layout, or in k-fold mode a CSV
    with a fold column (only its header line is read)."""
    source = config.data.source
    if source.type == "folds":
        return "data.source.type: folds"
    if isinstance(source, CsvSource) and config.cv.mode == "kfold" and source.path.is_file():
        header = _csv_header(source.path)
        if header is not None and source.fold_column in header:
            return f"the fold column {source.fold_column!r} of {source.path.name}"
    return None


def _ignored_keys(config: Config) -> Iterator[tuple[str, str]]:
    """(cv key, why it is not used) for each key the user wrote that the layout or mode ignores."""
    cv = config.cv
    if config.data.source.type == "folds":
        why = "with predefined folds (data.source.type: folds): each fold's train, valid and test folders are used"
        yield from ((key, why) for key in ("mode", "val_fraction", "test_fraction", "pool", "grouped")
                    if _written(cv, key))
    elif cv.mode == "holdout":
        why = "in cv.mode: holdout, which trains one fold on the data's own train split (val when it has one)"
        yield from ((key, why) for key in ("n_folds", "pool") if _written(cv, key))


def _csv_header(path: Path) -> list[str] | None:
    """The header line of a CSV (UTF-8, a BOM allowed); None when unreadable, which loading the data names."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            return next(csv.reader(file), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


# ------------------------------------------------------------------------------------------------ device
def available_devices() -> list[str]:
    """The ``training.device`` values this machine can run: auto and cpu, then cuda (cuda:0...) and mps if any."""
    found = ["auto", "cpu"]
    if torch.cuda.is_available():
        found += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def _device_problems(training: TrainingConfig) -> Iterator[Problem]:
    """``training.device`` exists on this machine, a precision other than fp32 has a device that runs it (CUDA;
    or for bf16, a CPU with bf16 instructions), and ``training.compile`` has a C++ compiler."""
    available, device = available_devices(), training.device
    if device not in available:
        if device.startswith("cuda") and "cuda" in available:
            why = f"it has {torch.cuda.device_count()} CUDA device(s), numbered from 0"
        else:
            why = "no CUDA device is available" if device.startswith("cuda") else f"{device} is not available"
        yield ("training.device", f"{device!r} is not on this machine ({why}). Available here: "
               f"{', '.join(available)}", device)
    elif not (device.startswith("cuda") or "cuda" in available and device == "auto"):  # trains on the CPU
        if problem := cpu_precision_problem(training.precision):
            yield ("training.precision", f"training.device {device!r} trains on the CPU here, and {problem}",
                   training.precision)
    if training.compile and (problem := compiler_problem()):
        yield ("training.compile", problem, training.compile)
