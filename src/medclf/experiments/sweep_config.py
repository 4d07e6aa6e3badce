"""A sweep's configuration: a base medclf config plus a ``sweep:`` section, expanded into named variants.

Every variant is the base config with its overrides (dotted keys) applied, validated once with
:func:`medclf.experiments.validation.parse_checked_config`, so a misspelt key or name is an error that names
the variant. Variants come from ``sweep.variants`` (name -> overrides) and from ``sweep.grid`` (the cartesian
product of dotted key -> list), in that order; a search (``sweep.search: random | optuna``) samples its
trials from ``sweep.space`` instead. The keys are documented in ``docs/sweeps.md``.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from medclf.config import Config, read_yaml
from medclf.config.loading import set_dotted
from medclf.errors import ConfigError
from medclf.experiments.validation import parse_checked_config
from medclf.registry import closest

__all__ = [
    "RangeParam",
    "RayOptions",
    "SweepPlan",
    "SweepSection",
    "Variant",
    "apply_dotted",
    "expand_variants",
    "load_sweep",
    "sweep_keys",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RangeParam(_Section):
    """A numeric search range; a plain list in ``sweep.space`` is a set of choices instead."""

    low: float
    high: float
    log: bool = False  # sample uniformly in log space (learning rates, weight decay)
    step: float | None = Field(None, gt=0)  # quantise to low + k * step (not with log)
    type: Literal["float", "int"] = "float"

    @model_validator(mode="after")
    def _ordered(self) -> RangeParam:
        if not self.low < self.high:
            raise ValueError(f"a range needs low < high, got low={self.low} and high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            # equal steps and log spacing contradict each other (Optuna refuses the pair with a bare ValueError)
            raise ValueError(f"a range takes log: true or a step, not both; got log: true and step: {self.step:g}. "
                             "Drop step for a log-uniform range, or log for one quantised to low + k * step")
        return self


def _space_kind(value: Any) -> str | None:
    """Which form a ``sweep.space`` entry takes: a list of choices or a range mapping (None: neither)."""
    if isinstance(value, list):
        return "choices"
    return "range" if isinstance(value, (dict, RangeParam)) else None


# a tagged union, so an error in a range is reported once, not also as "not a valid list"
SpaceEntry = Annotated[
    Union[Annotated[list[Any], Tag("choices")], Annotated[RangeParam, Tag("range")]], Discriminator(_space_kind)
]
_SPACE_TAGS = ("choices", "range")


class RayOptions(_Section):
    """What each (variant, fold) task declares to Ray, and how often a lost task is retried."""

    num_cpus_per_task: float = Field(1.0, gt=0)
    num_gpus_per_task: float = Field(0.0, ge=0)
    max_retries: int = Field(3, ge=0)  # a worker lost mid-task (node failure, OOM kill) reruns the fold


class SweepSection(_Section):
    grid: dict[str, list[Any]] = {}  # dotted key -> values; every combination is a variant
    variants: dict[str, dict[str, Any]] = {}  # name -> {dotted key: value}
    baseline: str | None = None  # the variant every other is tested against; default: the first
    metric: str = "auc_macro"  # ranks the variants and is optimised by a search
    split: Literal["holdout", "val", "test"] = "holdout"  # holdout: the cross-validation estimate
    alpha: float = Field(0.05, gt=0, lt=1)  # significance level of the verdicts
    search: Literal["grid", "random", "optuna"] = "grid"
    trials: int = Field(20, ge=1)  # random / optuna: number of sampled configs
    space: dict[str, SpaceEntry] = {}  # random / optuna: dotted key -> choices or range
    seed: int = 0  # seed of the random / optuna sampler
    ray: RayOptions = RayOptions()

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        from medclf.evaluation.metrics import SUMMARY_METRICS

        if v not in SUMMARY_METRICS:
            hint = closest(v, list(SUMMARY_METRICS))
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise ValueError(f"cannot rank on {v!r}.{did_you_mean} Choose one of: {', '.join(SUMMARY_METRICS)}")
        return v

    @field_validator("grid")
    @classmethod
    def _non_empty_lists(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [k for k, values in v.items() if not values]
        if empty:
            raise ValueError(f"grid keys need at least one value; empty: {', '.join(empty)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SweepSection:
        if self.search == "grid":
            if not self.grid and not self.variants:
                raise ValueError("a grid sweep needs sweep.grid or sweep.variants (or sweep.search: random/optuna)")
            if self.space:
                raise ValueError("sweep.space is for sweep.search: random or optuna, not grid")
        else:
            if not self.space:
                raise ValueError(f"sweep.search: {self.search} needs sweep.space (dotted key -> choices or range)")
            if self.split == "test":
                raise ValueError(f"sweep.search: {self.search} optimises a validation metric: split must be "
                                 "holdout or val, never test")
            if self.grid or self.variants:
                raise ValueError(f"sweep.search: {self.search} samples sweep.space; drop sweep.grid and "
                                 "sweep.variants (the base config is the baseline)")
            paired = [k for k in self.space if k in ("seed", "cv") or k.startswith("cv.")]
            if paired:
                raise ValueError(f"sweep.space may not vary {', '.join(paired)}: every trial must run on the base "
                                 "config's folds, or its comparison with the base would not be paired. Set seed and "
                                 "cv in the base config")
            empty = [k for k, p in self.space.items() if isinstance(p, list) and not p]
            if empty:
                raise ValueError(f"sweep.space choices need at least one value; empty: {', '.join(empty)}")
        return self


def sweep_keys() -> set[str]:
    """Every dotted key of the ``sweep:`` section (``docs/sweeps.md`` lists them all)."""
    keys = {f"sweep.{k}" for k in SweepSection.model_fields}
    keys |= {f"sweep.ray.{k}" for k in RayOptions.model_fields}
    keys |= {f"sweep.space.<key>.{k}" for k in RangeParam.model_fields}
    return keys


@dataclass(frozen=True)
class Variant:
    """One configuration of the sweep: its name, its overrides of the base, and the validated config."""

    name: str
    overrides: dict[str, Any]
    config: Config
    score_test: bool = True  # search trials are scored on validation only


@dataclass
class SweepPlan:
    """A loaded sweep file: the sweep section, the base config's raw dict and where it came from."""

    sweep: SweepSection
    base: dict[str, Any]
    base_dir: Path
    origin: str
    variants: list[Variant] = field(default_factory=list)
    check_device: bool = True  # False: a Ray cluster trains the variants, not the machine that checks them

    def make_variant(self, name: str, overrides: dict[str, Any], *, score_test: bool = True) -> Variant:
        """The base with ``overrides`` applied, validated; an error names the variant."""
        raw = apply_dotted(self.base, overrides)
        config = parse_checked_config(raw, base_dir=self.base_dir, origin=f"variant {name!r} of {self.origin}",
                                      check_device=self.check_device)
        return Variant(name=name, overrides=dict(overrides), config=config, score_test=score_test)

    @property
    def baseline(self) -> str:
        return self.sweep.baseline or (self.variants[0].name if self.variants else "base")


def apply_dotted(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``raw`` with each ``dotted.key: value`` of ``overrides`` set, as ``-o`` sets it (parents
    created; a number indexes a list the base config writes: ``training.stages.0.lr``)."""
    out = copy.deepcopy(raw)
    for key, value in overrides.items():
        set_dotted(out, key, copy.deepcopy(value), origin=f"sweep key {key!r}")
    return out


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _grid_points(grid: dict[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides) of every grid combination; keys with one value are left out of the names."""
    if not grid:
        return []
    keys = list(grid)
    varying = [k for k in keys if len(grid[k]) > 1]
    leaves = [k.rsplit(".", 1)[-1] for k in varying]
    labels = {k: (leaf if leaves.count(leaf) == 1 else k) for k, leaf in zip(varying, leaves)}
    points = []
    for values in itertools.product(*(grid[k] for k in keys)):
        overrides = dict(zip(keys, values))
        name = ",".join(f"{labels[k]}={_short(overrides[k])}" for k in varying) or "grid"
        points.append((name, overrides))
    return points


def expand_variants(plan: SweepPlan) -> list[Variant]:
    """The named variants of a grid sweep: ``sweep.variants`` in file order, then the grid's combinations."""
    named = list(plan.sweep.variants.items()) + _grid_points(plan.sweep.grid)
    seen: set[str] = set()
    variants = []
    for name, overrides in named:
        if name in seen:
            raise ConfigError(f"{plan.origin}: the sweep has two variants named {name!r}; rename one in "
                              "sweep.variants.")
        seen.add(name)
        variants.append(plan.make_variant(name, overrides))
    for v in variants[1:]:
        if (v.config.seed, v.config.cv) != (variants[0].config.seed, variants[0].config.cv):
            raise ConfigError(f"{plan.origin}: variant {v.name!r} changes seed or cv, so it would run on other folds "
                              f"than {variants[0].name!r} and the comparison would not be paired. Set seed and cv in "
                              "the base config, not in a variant.")
    return variants


def _format_sweep_errors(error: ValidationError, origin: str) -> str:
    lines = []
    for err in error.errors():
        loc = tuple(err["loc"])
        if loc[:1] == ("space",) and len(loc) > 2 and loc[2] in _SPACE_TAGS:
            loc = loc[:2] + loc[3:]  # the union's tag is plumbing, not a key the user wrote
        where = ".".join(["sweep", *(str(p) for p in loc)])
        if err["type"] == "extra_forbidden":
            parent: Any = SweepSection if len(loc) == 1 else RayOptions if loc[0] == "ray" else RangeParam
            valid = list(parent.model_fields)
            hint = closest(str(loc[-1]), valid)
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            lines.append(f"{where}: unknown key.{did_you_mean} Valid keys here: {', '.join(valid)}.")
        elif err["type"] == "union_tag_not_found":
            lines.append(f"{where}: a search space entry is a list of choices or a range {{low, high, log, step, "
                         f"type}} (got {err.get('input')!r}).")
        else:
            msg = err["msg"].removeprefix("Value error, ").rstrip(".")
            got = repr(err.get("input"))
            # a check across keys (loc is the section itself) names its keys; the whole section is no help
            lines.append(f"{where}: {msg}." if got in msg or not loc else f"{where}: {msg} (got {got}).")
    return f"{origin} is not a valid sweep config: " + " ".join(lines)


def load_sweep(path: str | Path, *, check_device: bool = True) -> SweepPlan:
    """Read a sweep file (a medclf config plus a ``sweep:`` section), validate it and expand its variants.

    Raises:
        ConfigError: the file is missing, not YAML, has no ``sweep:`` section, or any variant is invalid.
    """
    path = Path(path)
    raw = read_yaml(path, what="Sweep file")
    if not isinstance(raw, dict) or not isinstance(raw.get("sweep"), dict):
        raise ConfigError(f"{path} has no sweep: section. A sweep file is a medclf config plus sweep: with grid, "
                          "variants or a search; see docs/sweeps.md. For a single study use medclf run.")
    base = {k: v for k, v in raw.items() if k != "sweep"}
    try:
        section = SweepSection.model_validate(raw["sweep"])
    except ValidationError as error:
        raise ConfigError(_format_sweep_errors(error, str(path))) from None
    plan = SweepPlan(sweep=section, base=base, base_dir=path.parent.absolute(), origin=str(path),
                     check_device=check_device)
    if section.search == "grid":
        plan.variants = expand_variants(plan)
        if section.baseline is not None and section.baseline not in {v.name for v in plan.variants}:
            names = [v.name for v in plan.variants]
            hint = closest(section.baseline, names)
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise ConfigError(f"{path}: sweep.baseline {section.baseline!r} is not a variant.{did_you_mean} "
                              f"Variants: {', '.join(names)}.")
    else:
        plan.variants = [plan.make_variant("base", {}, score_test=False)]  # the baseline of the trials
        if section.baseline not in (None, "base"):
            raise ConfigError(f"{path}: with sweep.search: {section.search} the baseline is the base config, "
                              f"named 'base'; got sweep.baseline {section.baseline!r}.")
        _probe_space(plan)
    return plan


def _probe_values(p: list[Any] | RangeParam) -> list[Any]:
    """The values of a space entry that stand for all of it: every choice, or a range's ends (and an inner value)."""
    if isinstance(p, list):
        return p
    if p.type == "int":
        return [int(round(p.low)), int(round(p.high))]
    inner = [] if p.step is not None else [p.low + 0.37 * (p.high - p.low)]  # catches a float range on an int key
    return [p.low, p.high, *inner]


def _probe_space(plan: SweepPlan) -> None:
    """Validate the base with each probe value of ``sweep.space`` set, so a bad key or value fails now, not at a trial.

    Raises:
        ConfigError: naming the space key and value, with the usual config message.
    """
    for key, p in plan.sweep.space.items():
        for value in _probe_values(p):
            parse_checked_config(apply_dotted(plan.base, {key: value}), base_dir=plan.base_dir,
                                 origin=f"sweep.space value {key}: {_short(value)} of {plan.origin}",
                                 check_device=plan.check_device)
