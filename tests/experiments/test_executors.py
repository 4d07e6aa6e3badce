"""Executors: thread budgets of local workers, and what a Ray task declares."""

from __future__ import annotations

import os
import sys
import types

import pytest

from medclf.errors import ConfigError
from medclf.experiments.executors import LocalExecutor, RayExecutor, _thread_env
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
