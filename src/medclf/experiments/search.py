"""Search samplers: propose a trial's overrides from ``sweep.space``, learn from its validation score.

``random`` samples every key independently (a seeded numpy generator); ``optuna`` uses Optuna's TPE sampler
(seeded) through its ask-and-tell interface. A space entry is a list of choices or a
:class:`~medclf.experiments.sweep_config.RangeParam`. The score told back is always a validation estimate
(the holdout or val split), never test: the search driver guarantees that.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol

import numpy as np

from medclf.errors import ConfigError
from medclf.experiments.sweep_config import RangeParam

__all__ = ["OptunaSampler", "RandomSampler", "Sampler", "make_sampler"]

Space = dict[str, list[Any] | RangeParam]


class Sampler(Protocol):
    def ask(self) -> dict[str, Any]: ...

    def tell(self, value: float | None) -> None: ...


def _quantise(x: float, p: RangeParam) -> float | int:
    if p.step is not None:
        x = p.low + round((x - p.low) / p.step) * p.step
        x = min(max(x, p.low), p.high)
    return int(round(x)) if p.type == "int" else float(x)


class RandomSampler:
    """Independent uniform draws (log-uniform where ``log``) for every key of the space."""

    def __init__(self, space: Space, *, seed: int) -> None:
        self.space = space
        self.rng = np.random.default_rng(seed)

    def ask(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, p in self.space.items():
            if isinstance(p, list):
                out[key] = p[int(self.rng.integers(len(p)))]
            elif p.log:
                out[key] = _quantise(math.exp(self.rng.uniform(math.log(p.low), math.log(p.high))), p)
            else:
                high = p.high + (1 if p.type == "int" and p.step is None else 0)
                value = self.rng.uniform(p.low, high)
                out[key] = _quantise(math.floor(value) if p.type == "int" and p.step is None else value, p)
        return out

    def tell(self, value: float | None) -> None:
        """Random search does not learn."""


class OptunaSampler:
    """Optuna's TPE sampler; choices are proposed by index, so any YAML value (lists, mappings) can be a choice."""

    def __init__(self, space: Space, *, seed: int, direction: Literal["maximize", "minimize"]) -> None:
        try:
            import optuna
        except ImportError:
            raise ConfigError("sweep.search: optuna needs Optuna: pip install 'medclf[search]'.") from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.space = space
        self.study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed))
        self.trial: Any = None

    def _distribution(self, p: list[Any] | RangeParam) -> Any:
        d = self.optuna.distributions
        if isinstance(p, list):
            return d.CategoricalDistribution(list(range(len(p))))
        if p.type == "int":
            return d.IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        return d.FloatDistribution(p.low, p.high, log=p.log, step=p.step)

    def ask(self) -> dict[str, Any]:
        self.trial = self.study.ask({key: self._distribution(p) for key, p in self.space.items()})
        out: dict[str, Any] = {}
        for key, p in self.space.items():
            value = self.trial.params[key]
            out[key] = p[value] if isinstance(p, list) else value
        return out

    def tell(self, value: float | None) -> None:
        state = self.optuna.trial.TrialState.COMPLETE if value is not None else self.optuna.trial.TrialState.FAIL
        self.study.tell(self.trial, value if value is not None else None, state=state)


def make_sampler(kind: str, space: Space, *, seed: int, maximize: bool) -> Sampler:
    if kind == "random":
        return RandomSampler(space, seed=seed)
    return OptunaSampler(space, seed=seed, direction="maximize" if maximize else "minimize")
