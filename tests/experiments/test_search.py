"""Search samplers: proposals stay in the space, are seeded, and Optuna learns from what it is told."""

from __future__ import annotations

import math

from medclf.experiments.search import OptunaSampler, RandomSampler
from medclf.experiments.sweep_config import RangeParam

SPACE = {
    "training.optimizer.lr": RangeParam(low=1e-4, high=1e-1, log=True),
    "training.batch_size": RangeParam(low=8, high=64, step=8, type="int"),
    "training.epochs": RangeParam(low=1, high=3, type="int"),
    "model.head": [None, {"hidden": [16], "dropout": 0.3}],
}


def _in_space(p: dict) -> bool:
    return (1e-4 <= p["training.optimizer.lr"] <= 1e-1 and p["training.batch_size"] in range(8, 65, 8)
            and p["training.epochs"] in (1, 2, 3) and p["model.head"] in SPACE["model.head"])


def test_random_sampler_is_seeded_and_stays_in_the_space():
    a, b = RandomSampler(SPACE, seed=3), RandomSampler(SPACE, seed=3)
    draws = [a.ask() for _ in range(200)]
    assert draws[:5] == [b.ask() for _ in range(5)]
    assert all(_in_space(p) for p in draws)
    assert {p["training.epochs"] for p in draws} == {1, 2, 3}
    logs = [math.log10(p["training.optimizer.lr"]) for p in draws]
    assert min(logs) < -3.5 and max(logs) > -1.5  # log-uniform covers the decades


def test_optuna_sampler_proposes_in_the_space_and_learns():
    sampler = OptunaSampler(SPACE, seed=0, direction="maximize")
    for _ in range(12):
        p = sampler.ask()
        assert _in_space(p)
        sampler.tell(-abs(math.log10(p["training.optimizer.lr"]) + 2))  # best at lr = 1e-2
    assert sampler.study.best_value <= 0 and len(sampler.study.trials) == 12
    best_lr = sampler.study.best_params["training.optimizer.lr"]
    assert 1e-4 <= best_lr <= 1e-1
    sampler.ask()
    sampler.tell(None)  # a failed trial is recorded, not fatal
    assert sampler.study.trials[-1].state.name == "FAIL"
