"""Executors: thread budgets of local workers, what a Ray task declares, and what a worker loads."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from medclf.data.splitting import Fold
from medclf.errors import ConfigError
from medclf.experiments.executors import (
    FoldTask,
    LocalExecutor,
    RayExecutor,
    _thread_env,
    available_cores,
    execute_fold_task,
    make_executor,
    study_executor,
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
                        "at once compete for the cores; it is no faster than with --parallel 2."]
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
    monkeypatch.setattr(study_module, "run_fold",
                        lambda cfg, *a, **kw: seen.update(config=cfg, threads=torch.get_num_threads()))
    before = torch.get_num_threads()
    execute_fold_task(task, 1)
    assert seen["threads"] == 1 and torch.get_num_threads() == before  # the caller's threads are restored
    assert seen["config"].training.num_threads == 1
    assert config_fingerprint(seen["config"]) == config_fingerprint(config)  # the same run folder
    assert with_thread_budget(config, 3).training.num_threads == 3 and config.training.num_threads == 8


def test_make_executor_runs_parallel_folds_at_once_locally_or_on_a_local_ray():
    options = RayOptions(num_cpus_per_task=2)
    local = make_executor("local", ray=options, parallel=3)
    assert isinstance(local, LocalExecutor) and local.parallel == 3
    ray = make_executor("ray", ray=options, parallel=3)
    assert isinstance(ray, RayExecutor) and ray.num_cpus == 6 and ray.options is options  # 3 tasks of 2 CPUs
    assert make_executor("ray", ray=options).num_cpus is None  # parallel 1: a local Ray of every core
    assert make_executor("ray", ray=options, address="ray://head:10001").address == "ray://head:10001"
    for kwargs, message in ((dict(kind="dask"), "--executor must be local or ray, got 'dask'"),
                            (dict(kind="local", address="head:6379"), "--address joins a Ray cluster"),
                            (dict(kind="ray", parallel=0), "--parallel must be at least 1, got 0")):
        with pytest.raises(ConfigError, match=message):
            make_executor(**kwargs, ray=options)


def test_a_studys_ray_tasks_get_the_thread_budget_of_its_local_workers():
    cores = available_cores()
    ray = study_executor("ray", parallel=2, gpus_per_fold=0.5)
    assert ray.options.num_cpus_per_task == max(1, cores // 2) == LocalExecutor(parallel=2).threads
    assert ray.options.num_gpus_per_task == 0.5 and ray.num_cpus == 2 * max(1, cores // 2)
    assert study_executor("ray").options.num_cpus_per_task == cores  # one fold at a time, on every core
    assert study_executor("local", parallel=2).parallel == 2
    with pytest.raises(ConfigError, match="--gpus-per-fold is what each fold's Ray task asks Ray for; give it with "
                                          "--executor ray"):
        study_executor("local", gpus_per_fold=1)
    for gpus in (-1, 2):
        with pytest.raises(ConfigError, match=f"--gpus-per-fold must be between 0 and 1, got {gpus}: a fold trains "
                                              "on one GPU"):
            study_executor("ray", gpus_per_fold=gpus)
    with pytest.raises(ConfigError, match="--parallel must be at least 1, got 0"):
        study_executor("ray", parallel=0)


def test_tasks_no_ray_node_can_run_are_refused_not_left_pending(monkeypatch):
    nodes = [{"Alive": True, "Resources": {"CPU": 4.0}}, {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    class Sent(Exception):
        """Raised by the fake Ray when a task is submitted."""

    def submit(*args):
        raise Sent

    sent: list = []
    fake = types.SimpleNamespace(is_initialized=lambda: True, nodes=lambda: nodes,
                                 remote=lambda **kw: sent.append(kw) or (lambda fn: types.SimpleNamespace(
                                     remote=submit)))
    monkeypatch.setitem(sys.modules, "ray", fake)
    empty = np.empty(0, dtype=np.int64)
    task = FoldTask("v", None, Path("run"), Fold(0, empty, empty, empty, empty), "fp")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"each fold asks Ray for 1 CPU\(s\) and 1 GPU\(s\), but no node of the "
                                          r"Ray cluster has that much \(the largest has 4 CPUs and 0 GPUs\)"):
        RayExecutor(RayOptions(num_gpus_per_task=1)).run([task], run_inline=lambda t: {}, log=print)
    with pytest.raises(ConfigError, match="the largest has 4 CPUs"):
        RayExecutor(RayOptions(num_cpus_per_task=8)).run([task], run_inline=lambda t: {}, log=print)
    assert sent == []
    # a cluster's autoscaler may add such a node: there it is a warning, and the tasks are sent
    messages: list[str] = []
    with pytest.raises(Sent):
        RayExecutor(RayOptions(num_cpus_per_task=8), address="head:6379").run(
            [task], run_inline=lambda t: {}, log=messages.append)
    assert messages[0].startswith("warning: each fold asks Ray for 8 CPU(s)") and "autoscaler" in messages[0]


def test_a_worker_re_splits_the_data_by_patient_as_the_driver_did(monkeypatch, tmp_path):
    """cv.resplit_by_patient: the worker's data.splits are the driver's, not the data's own."""
    import medclf.experiments.study as study_module
    from medclf.config import parse_config
    from medclf.data import ImageSet
    from medclf.data.splitting import resplit_data
    from medclf.experiments import executors

    patients = np.repeat(np.arange(40), 2)
    splits = np.where(patients < 32, "train", "test").astype(object)
    splits[(patients % 5 == 0) & (splits == "train")] = "val"
    splits[[2, 5, 9]] = "test"  # patients 1, 2 and 4 have an image in train (or val) and one in test
    data = ImageSet(images=np.zeros((80, 1, 4, 4), np.uint8), labels=(patients % 2).astype(np.int64),
                    ids=np.array([f"{i}.png" for i in range(80)]), splits=splits.astype(str), class_names=["a", "b"],
                    groups=np.array([f"P{p}" for p in patients]), fingerprint="fp")
    config = parse_config({"data": {"source": {"type": "synthetic"}}, "cv": {"resplit_by_patient": True}, "seed": 3})
    driver = resplit_data(data, config.cv, seed=config.seed)  # what prepare_study made the folds from
    assert not np.array_equal(driver.splits, data.splits)
    empty = np.empty(0, dtype=np.int64)
    task = FoldTask("v", config, tmp_path, Fold(0, empty, empty, empty, empty), "fp")
    monkeypatch.setitem(executors._DATA_MEMO, config.data.model_dump_json(), data)
    seen: dict = {}
    monkeypatch.setattr(study_module, "run_fold", lambda cfg, study, *a, **kw: seen.setdefault("data", study.data))
    execute_fold_task(task)
    np.testing.assert_array_equal(seen["data"].splits, driver.splits)
