"""Reading, overriding, validating, dumping and fingerprinting configs; errors as one readable paragraph."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from medclf.config.data import (
    CsvSource,
    FolderSource,
    FoldsSource,
    NpzSource,
    PatientsSource,
    SplitsSource,
    SyntheticSource,
)
from medclf.config.model import (
    BatchNormLayer,
    ConvLayer,
    DenseLayer,
    DropoutLayer,
    FlattenLayer,
    GlobalPoolLayer,
    PoolLayer,
    ResidualLayer,
)
from medclf.config.study import Config
from medclf.errors import ConfigError
from medclf.registry import closest


# ------------------------------------------------------------------------------------------------ loading
def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw config dict.

    A part that meets a list written in the config is an index into it: ``training.stages.0.lr=0.01`` sets the
    first stage's ``lr``, ``model.layers.1={type: maxpool}`` replaces the second layer.

    Raises:
        ConfigError: an override is not ``key=value``, or indexes a list with a non-integer or out of range.
    """
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"Override {item!r} is not of the form dotted.key=value (for example training.epochs=3)."
            )
        set_dotted(data, key.strip(), _parse_value(raw), origin=f"Override {item!r}")
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any, *, origin: str) -> None:
    """Set ``dotted.key`` in ``data`` in place: missing sections are created, a number indexes a written list.

    ``origin`` opens the error (``Override 'a.b=1'``, a sweep's key...).

    Raises:
        ConfigError: a part indexes a list with a non-integer or out of range.
    """
    parts = key.split(".")
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            index = _list_index(origin, parts[:depth], node, part)
            if not isinstance(node[index], (dict, list)):
                node[index] = {}
            node = node[index]
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]
    if isinstance(node, list):
        node[_list_index(origin, parts[:-1], node, parts[-1])] = value
    else:
        node[parts[-1]] = value


def _list_index(origin: str, where: list[str], values: list[Any], part: str) -> int:
    """``part`` as an index into the list at dotted key ``where``; a ConfigError naming the valid indices."""
    dotted = ".".join(where)
    if not values:
        raise ConfigError(f"{origin}: {dotted} is an empty list, so it has no element {part!r} to "
                          f"set; write the whole list instead (-o '{dotted}=[...]').")
    n = len(values)
    valid = "the valid index is 0" if n == 1 else f"valid indices: {', '.join(map(str, range(n)))}" if n <= 4 \
        else f"valid indices: 0 to {n - 1}"
    if not part.isdigit():
        raise ConfigError(f"{origin}: {dotted} is a list of {n} element(s), indexed by position, not "
                          f"by {part!r}; {valid}.")
    if int(part) >= n:
        raise ConfigError(f"{origin}: {dotted} has {n} element(s), so there is no index "
                          f"{part}; {valid}.")
    return int(part)


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
        # a union's tag, unless it is a field's own name there (cv.folds is a key, "folds" also a source type)
        tag_free = [str(p) for i, p in enumerate(loc) if not (_is_tag(p) and p not in _section_fields(loc[:i]))]
        where = ".".join(tag_free) or "(top level)"
        if err["type"] == "extra_forbidden":
            valid = [f for f in _section_fields(loc[:-1]) if f != "type"] or _section_fields(loc[:-1])
            hint = closest(str(loc[-1]), valid)
            did_you_mean = f" Did you mean {'.'.join(tag_free[:-1] + [hint])!r}?" if hint else ""
            lines.append(f"{where}: unknown key.{did_you_mean} Valid keys here: {', '.join(valid)}.")
        elif err["type"] == "missing":
            lines.append(f"{where}: required key is missing.")
        elif err["type"] in ("literal_error", "union_tag_invalid", "union_tag_not_found"):
            lines.append(_choice_line(err, tag_free))
        elif err["type"] == "list_type" and _indexed_by_override(err.get("input")):
            lines.append(f"{where}: an override set {where}.<index> but the config writes no list {where} to index "
                         f"(got {err['input']!r}); write the list in the YAML, or set the whole list "
                         f"(-o '{where}=[...]').")
        else:
            lines.append(_problem_line(where, err["msg"].removeprefix("Value error, "), err.get("input")))
    return f"{origin} is not a valid medclf config: " + " ".join(lines)


def _indexed_by_override(value: Any) -> bool:
    """A mapping whose keys are all positions: what ``-o key.0.x=...`` makes where the config has no list."""
    return isinstance(value, dict) and bool(value) and all(str(k).isdigit() for k in value)


def _choice_line(err: dict[str, Any], tag_free: list[str]) -> str:
    """An enum value or a variant's ``type`` that is not one of the choices, worded as an unknown key is."""
    if err["type"] == "literal_error":
        where, value = ".".join(tag_free), err.get("input")
        choices = [c.strip().strip("'") for c in re.split(r", | or ", err["ctx"]["expected"])]
        what = "an accepted value"
    else:  # a discriminated union's tag: the location is the variant's section, the key its `type`
        where, value = ".".join([*tag_free, "type"]), (err.get("input") or {}).get("type")
        section = next((p for p in reversed(tag_free) if not p.isdigit()), "")
        choices = _SOURCE_TYPES if section == "source" else _LAYER_TYPES
        what = "a data source type" if section == "source" else "a layer type"
        if err["type"] == "union_tag_not_found":
            return f"{where}: required key is missing. Choose one of: {', '.join(choices)}."
    hint = closest(value, choices) if isinstance(value, str) else None
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    return f"{where}: {value!r} is not {what}.{did_you_mean} Choose one of: {', '.join(choices)}."


def _problem_line(where: str, message: str, value: Any) -> str:
    msg = message.rstrip(".")
    got = repr(value)
    return f"{where}: {msg}." if got in msg else f"{where}: {msg} (got {got})."


def invalid_config(origin: str, problems: list[tuple[str, str, Any]]) -> ConfigError:
    """The :class:`ConfigError` for ``(dotted key, message, value)`` problems, worded as :func:`parse_config`'s.

    Checks that run after parsing (:func:`medclf.experiments.validation.check_config`) report through it, so a
    misspelt optimizer reads the same as a misspelt key.
    """
    lines = [_problem_line(where, message, value) for where, message, value in problems]
    return ConfigError(f"{origin} is not a valid medclf config: " + " ".join(lines))


_TAGGED = (
    FolderSource, SplitsSource, NpzSource, CsvSource, SyntheticSource, FoldsSource, PatientsSource,
    ConvLayer, PoolLayer, BatchNormLayer, DropoutLayer, FlattenLayer, GlobalPoolLayer, DenseLayer, ResidualLayer,
)


_SOURCE_TYPES = [t for m in _TAGGED[:7] for t in m.model_fields["type"].annotation.__args__]
_LAYER_TYPES = [t for m in _TAGGED[7:] for t in m.model_fields["type"].annotation.__args__]


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
    "data.memory",  # RAM or memory-mapped: the same pixels, bit-identical fits
    "data.memory_share",
    "data.source.path",
    "training.device",
    "training.num_threads",
    "training.eval_batch_size",
    "cv.folds",  # which folds run, not what each computes: running the rest later resumes the folder
    # where a study is also logged, not what it computes (the emptied section is dropped from the fingerprint)
    "tracking.tensorboard",
    "tracking.mlflow",
    "tracking.mlflow_uri",
    "tracking.experiment",
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
    data = {k: v for k, v in data.items() if v != {}}  # tracking: left out whole, so older runs keep their hash
    training = data.get("training", {})
    if training.get("recipe") == "auto" and data.get("model", {}).get("pretrained") is False:
        training["recipe"] = "finetune"  # what auto trains without pretrained weights: older runs keep their hash
    _drop_later_defaults(data)
    canonical = json.dumps(data, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# Keys added after run folders existed, left out of the fingerprint while at their default: a default computes
# what those runs computed, so they keep their hash; a written value changes it.
_LATER_DEFAULTS = {"training.probe": {"cs": 10, "inner_folds": 5, "max_iter": 2000}, "training.stages.kind": "sgd",
                   "evaluation.baseline": "auto", "training.compile": False, "training.ema": None,
                   "training.mixup": None, "training.progressive_resize": None}


def _drop_later_defaults(data: dict[str, Any]) -> None:
    training = data.get("training", {})
    if training.get("probe") == _LATER_DEFAULTS["training.probe"]:
        training.pop("probe")
    if training.get("compile") is _LATER_DEFAULTS["training.compile"]:
        training.pop("compile")
    for lever in ("ema", "mixup", "progressive_resize"):  # off (null) trains as before they existed
        if lever in training and training[lever] is _LATER_DEFAULTS[f"training.{lever}"]:
            training.pop(lever)
    for stage in training.get("stages", []):
        if stage.get("kind") == _LATER_DEFAULTS["training.stages.kind"]:
            stage.pop("kind")
    evaluation = data.get("evaluation", {})
    if evaluation.get("baseline") == _LATER_DEFAULTS["evaluation.baseline"]:
        evaluation.pop("baseline")


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

