"""Executors: thread budgets of local workers, and what a Ray task declares."""

from __future__ import annotations

import os
import sys
import types

import pytest

from medclf.errors import ConfigError
from medclf.experiments.executors import (
    FoldTask,
    LocalExecutor,
    RayExecutor,
    _thread_env,
    execute_fold_task,
    with_thread_budget,
)
from medclf.experiments.sweep_config import RayOptions


def test_local_workers_share_the_cores_without_oversubscribing():
    assert LocalExecutor(parallel=4, cores=16).threads == 4
    assert LocalExecutor(parallel=3, cores=2).threads == 1
    with pytest.raises(ConfigError, match="--parallel must be at least 1, got 0"):
        LocalExecutor(parallel=0)


def test_thread_env_is_set_for_workers_and_restored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with _thread_env(2):
        assert os.environ["OMP_NUM_THREADS"] == "2" and os.environ["MKL_NUM_THREADS"] == "2"
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


def test_ray_tasks_declare_cpus_gpus_and_retries(monkeypatch):
    calls: dict = {}
    fake = types.SimpleNamespace(
        is_initialized=lambda: False,
        init=lambda **kw: calls.setdefault("init", kw),
        shutdown=lambda: calls.setdefault("shutdown", True),
        remote=lambda **kw: calls.setdefault("remote", kw) and (lambda fn: fn),
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    options = RayOptions(num_cpus_per_task=2, num_gpus_per_task=0.5, max_retries=5)
    RayExecutor(options, num_cpus=4).run([], run_inline=lambda t: {}, log=print)
    assert calls["remote"] == {"num_cpus": 2, "num_gpus": 0.5, "max_retries": 5}
    assert calls["init"]["num_cpus"] == 4 and calls["shutdown"] is True
    calls.clear()
    RayExecutor(options, address="ray://head:10001").run([], run_inline=lambda t: {}, log=print)
    assert calls["init"]["address"] == "ray://head:10001"


def test_more_workers_than_cores_is_warned_about():
    messages: list[str] = []
    LocalExecutor(parallel=3, cores=2).run([], run_inline=lambda t: {}, log=messages.append)
    assert messages == ["warning: --parallel 3 exceeds the 2 CPU cores this process may use, so the folds running "
                        "at once compete for the cores; the sweep is no faster than with --parallel 2."]
    messages.clear()
    LocalExecutor(parallel=2, cores=2).run([], run_inline=lambda t: {}, log=messages.append)
    assert messages == []


def test_a_worker_runs_its_fold_with_its_thread_budget_not_the_configs(monkeypatch, tmp_path):
    """training.num_threads in the sweep file would make the fit loop undo the budget; the worker replaces it."""
    import numpy as np
    import torch

    import medclf.experiments.study as study_module
    from medclf.config import config_fingerprint, parse_config
    from medclf.data.splitting import Fold
    from medclf.experiments import executors

    config = parse_config({"data": {"source": {"type": "synthetic"}}, "training": {"num_threads": 8}})
    empty = np.empty(0, dtype=np.int64)
    task = FoldTask("v", config, tmp_path, Fold(0, empty, empty, empty, empty), "fp")
    monkeypatch.setitem(executors._DATA_MEMO, config.data.model_dump_json(), types.SimpleNamespace(fingerprint="fp"))
    seen: dict = {}
    monkeypatch.setattr(study_module, "run_fold", lambda cfg, *a, **kw: seen.setdefault("config", cfg))
    before = torch.get_num_threads()
    try:
        execute_fold_task(task, 1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert seen["config"].training.num_threads == 1
    assert config_fingerprint(seen["config"]) == config_fingerprint(config)  # the same run folder
    assert with_thread_budget(config, 3).training.num_threads == 3 and config.training.num_threads == 8
