"""Search samplers: proposals stay in the space, are seeded, and Optuna learns from what it is told."""

from __future__ import annotations

import math

from medclf.experiments.search import OptunaSampler, RandomSampler, in_space
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


def _objective(p: dict) -> float:
    """A fake validation score, best at lr = 1e-2 and batch size 32: no training needed."""
    return -abs(math.log10(p["training.optimizer.lr"]) + 2) - abs(p["training.batch_size"] - 32) / 32


def _uninterrupted(sampler, n: int) -> list[tuple[dict, float]]:
    history = []
    for _ in range(n):
        p = sampler.ask()
        sampler.tell(_objective(p))
        history.append((p, _objective(p)))
    return history


def test_optuna_replay_continues_exactly_where_an_uninterrupted_search_would():
    history = _uninterrupted(OptunaSampler(SPACE, seed=0, direction="maximize"), 14)  # past TPE's 10 random trials
    resumed = OptunaSampler(SPACE, seed=0, direction="maximize")
    resumed.replay(history[:11])
    assert [t.value for t in resumed.study.trials] == [v for _, v in history[:11]]
    assert _uninterrupted(resumed, 3) == history[11:]  # the same proposals, the same scores


def test_optuna_replay_rebuilds_the_history_when_proposals_differ():
    history = _uninterrupted(OptunaSampler(SPACE, seed=0, direction="maximize"), 4)
    history[2] = (history[2][0], None)  # a trial that failed (no score on any fold)
    resumed = OptunaSampler(SPACE, seed=7, direction="maximize")  # another seed proposes other configs
    resumed.replay(history)
    trials = resumed.study.trials
    assert len(trials) == 4 and [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert [t.value for t in trials] == [history[0][1], history[1][1], None, history[3][1]]
    assert trials[0].params["training.optimizer.lr"] == history[0][0]["training.optimizer.lr"]
    head = SPACE["model.head"]
    assert [head[t.params["model.head"]] for t in trials] == [p["model.head"] for p, _ in history]
    p = resumed.ask()
    assert _in_space(p) and p not in [q for q, _ in history]


def test_random_replay_draws_past_the_finished_trials():
    history = _uninterrupted(RandomSampler(SPACE, seed=3), 6)
    resumed = RandomSampler(SPACE, seed=3)
    resumed.replay(history[:4])
    assert [resumed.ask(), resumed.ask()] == [p for p, _ in history[4:]]


def test_in_space():
    point = {"training.optimizer.lr": 1e-3, "training.batch_size": 24, "training.epochs": 2, "model.head": None}
    assert in_space(SPACE, point)
    assert not in_space(SPACE, point | {"training.batch_size": 20})  # off the step
    assert not in_space(SPACE, point | {"training.epochs": 4})  # beyond high
    assert not in_space(SPACE, point | {"model.head": {"hidden": [8]}})  # not a choice
    assert not in_space(SPACE, {k: v for k, v in point.items() if k != "training.epochs"})  # a key less
