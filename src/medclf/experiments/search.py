"""Search samplers: propose a trial's overrides from ``sweep.space``, learn from its validation score.

``random`` samples every key independently (a seeded numpy generator); ``optuna`` uses Optuna's TPE sampler
(seeded) through its ask-and-tell interface. A space entry is a list of choices or a
:class:`~medclf.experiments.sweep_config.RangeParam`. The score told back is always a validation estimate
(the holdout or val split), never test: the search driver guarantees that.

A resumed search hands the sampler the trials an earlier run finished (``replay``), read from the sweep folder,
so the sampler learns from the same history whatever it would propose now.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol

import numpy as np

from medclf.errors import ConfigError
from medclf.experiments.sweep_config import RangeParam

__all__ = ["OptunaSampler", "RandomSampler", "Sampler", "in_space", "make_sampler"]

Space = dict[str, list[Any] | RangeParam]
Finished = list[tuple[dict[str, Any], float | None]]  # (overrides, score) of finished trials, in order


class Sampler(Protocol):
    def ask(self) -> dict[str, Any]: ...

    def tell(self, value: float | None) -> None: ...

    def replay(self, finished: Finished) -> None: ...


def in_space(space: Space, overrides: dict[str, Any]) -> bool:
    """Whether ``overrides`` is a point of ``space``: the same keys, each value a choice or on its range."""
    if set(overrides) != set(space):
        return False
    for key, p in space.items():
        value = overrides[key]
        if isinstance(p, list):
            if value not in p:
                return False
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not p.low <= value <= p.high:
            return False
        elif p.type == "int" and value != int(value):
            return False
        elif p.step is not None and not math.isclose((value - p.low) / p.step, round((value - p.low) / p.step),
                                                     abs_tol=1e-6):
            return False
    return True


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

    def replay(self, finished: Finished) -> None:
        """Draw as many proposals as trials finished, so the next one is the one an uninterrupted search makes."""
        for _ in finished:
            self.ask()


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
        self.seed, self.direction = seed, direction
        self.study = self._study(seed)
        self.trial: Any = None

    def _study(self, seed: int) -> Any:
        sampler = self.optuna.samplers.TPESampler(seed=seed)
        return self.optuna.create_study(direction=self.direction, sampler=sampler)

    def _distribution(self, p: list[Any] | RangeParam) -> Any:
        d = self.optuna.distributions
        if isinstance(p, list):
            return d.CategoricalDistribution(list(range(len(p))))
        if p.type == "int":
            return d.IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        return d.FloatDistribution(p.low, p.high, log=p.log, step=p.step)

    def _distributions(self) -> dict[str, Any]:
        return {key: self._distribution(p) for key, p in self.space.items()}

    def ask(self) -> dict[str, Any]:
        self.trial = self.study.ask(self._distributions())
        out: dict[str, Any] = {}
        for key, p in self.space.items():
            value = self.trial.params[key]
            out[key] = p[value] if isinstance(p, list) else value
        return out

    def tell(self, value: float | None) -> None:
        state = self.optuna.trial.TrialState.COMPLETE if value is not None else self.optuna.trial.TrialState.FAIL
        self.study.tell(self.trial, value if value is not None else None, state=state)

    def replay(self, finished: Finished) -> None:
        """Put the finished trials (points of the space, see :func:`in_space`) into the study's history.

        Each is asked again and told its recorded score: TPE's proposals follow from its seed and the history, so
        when they match (same Optuna, same space) the study ends where an uninterrupted search would. When one
        does not, the study is rebuilt from the recorded trials (``add_trial``), and its sampler is seeded with
        ``seed`` + their number, so it does not repeat the first proposals of the original seed.
        """
        for overrides, value in finished:
            if self.ask() != overrides:
                break
            self.tell(value)
        else:
            return
        self.study = self._study(self.seed + len(finished))  # the half-replayed study is dropped
        distributions = self._distributions()
        for overrides, value in finished:
            params = {k: p.index(overrides[k]) if isinstance(p, list) else overrides[k] for k, p in self.space.items()}
            state = self.optuna.trial.TrialState.COMPLETE if value is not None else self.optuna.trial.TrialState.FAIL
            self.study.add_trial(self.optuna.trial.create_trial(params=params, distributions=distributions,
                                                                value=value, state=state))


def make_sampler(kind: str, space: Space, *, seed: int, maximize: bool) -> Sampler:
    if kind == "random":
        return RandomSampler(space, seed=seed)
    return OptunaSampler(space, seed=seed, direction="maximize" if maximize else "minimize")
