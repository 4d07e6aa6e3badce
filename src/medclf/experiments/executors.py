"""Executors: run folds (a sweep's (variant, fold) tasks, one study's folds) in-process, in worker processes, or
as Ray tasks.

Every executor writes into the same run folders (``fold-<k>/``) and a fold is done when its ``complete.json``
verifies (:mod:`medclf.runfolder`), so executors can be swapped between runs of a sweep or study and a killed
run loses at most the folds in progress. Workers load the data themselves (through the decode cache) and check
its fingerprint against the one the driver planned with.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medclf.config import Config
from medclf.data.splitting import Fold, resplit_data
from medclf.errors import ConfigError, DataError
from medclf.experiments.sweep_config import RayOptions

__all__ = [
    "Executor", "FoldTask", "LocalExecutor", "RayExecutor", "available_cores", "execute_fold_task", "make_executor",
    "study_executor", "with_thread_budget",
]

Log = Callable[[str], None]
OnDone = Callable[["FoldTask", dict[str, Any]], None]  # a fold that ran in a worker, with its metrics.json
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class FoldTask:
    """One fold of one variant: everything a worker needs to run it into the run store."""

    variant: str
    config: Config
    run_dir: Path
    fold: Fold  # as the driver prepared it (after the audit), so every executor runs the same indices
    data_fingerprint: str
    score_test: bool = True
    n_folds: int | None = None  # the study's folds, recorded in each fold's complete.json
    folds_run: tuple[int, ...] | None = None  # the folds the sweep runs (cv.folds), recorded there too


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


_DATA_MEMO: dict[str, Any] = {}  # per worker process: data config (JSON) -> the ImageSet it loads


def with_thread_budget(config: Config, num_threads: int) -> Config:
    """``config`` with ``training.num_threads`` set to a worker's budget.

    The fit loop sets torch's threads from that key, so a value in the sweep file would otherwise undo the
    budget; the key is runtime-only, so the run folder (the store key) stays the same.
    """
    return config.model_copy(update={"training": config.training.model_copy(update={"num_threads": num_threads})})


def execute_fold_task(task: FoldTask, num_threads: int | None = None) -> dict[str, Any]:
    """Run one fold in this process (a worker's entry point); a fold already complete is read back, not rerun.

    A fold whose files are damaged or unfinished is trained again (the driver has logged why).

    ``num_threads`` is the worker's thread budget: torch's threads, and ``training.num_threads`` of the fold.

    Raises:
        DataError: the data loaded here differs from the data the driver planned the folds with.
    """
    from medclf.training.device import torch_threads

    config = with_thread_budget(task.config, num_threads) if num_threads else task.config
    with torch_threads(num_threads):  # restored after: an in-process call must not change the caller's threads
        return _execute(task, config)


def _execute(task: FoldTask, config: Config) -> dict[str, Any]:
    """:func:`execute_fold_task`'s work, ``config`` being the task's config with the worker's thread budget."""
    from medclf import runfolder
    from medclf.config import config_fingerprint
    from medclf.data import load_dataset
    from medclf.experiments.study import PreparedStudy, run_fold

    expect = {"config_fingerprint": config_fingerprint(task.config), "data_fingerprint": task.data_fingerprint}
    if runfolder.check_fold(task.run_dir, task.fold.index, expect).complete:
        return runfolder.read_json(runfolder.fold_dir(task.run_dir, task.fold.index) / "metrics.json")
    key = task.config.data.model_dump_json()
    if key not in _DATA_MEMO:
        _DATA_MEMO.clear()  # one dataset at a time per worker
        _DATA_MEMO[key] = load_dataset(task.config.data)
    # the driver's prepare_study re-split the data (cv.resplit_by_patient) before making the folds: so must the
    # worker, or its data.splits would differ from the driver's (the fingerprint stays the same either way)
    data = resplit_data(_DATA_MEMO[key], task.config.cv, seed=task.config.seed)
    if data.fingerprint != task.data_fingerprint:
        raise DataError(f"the data changed while the folds ran (fingerprint {data.fingerprint}, planned with "
                        f"{task.data_fingerprint}); run the same command again to replan them.", path=task.run_dir)
    study = PreparedStudy(data=data, data_info={}, folds=[task.fold], start=time.perf_counter(), data_s=0.0)
    return run_fold(config, study, task.fold.index, task.run_dir, score_test=task.score_test, n_folds=task.n_folds,
                    folds_run=list(task.folds_run) if task.folds_run else None)


@contextlib.contextmanager
def _thread_env(n_threads: int) -> Iterator[None]:
    """Set the OpenMP/BLAS thread variables that spawned workers inherit (read when they import torch)."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: str(n_threads) for k in _THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LocalExecutor:
    """One machine: in-process and sequential (``parallel=1``), or ``parallel`` folds at once in worker processes.

    Workers are spawned (not forked) with ``OMP_NUM_THREADS`` set to ``cores // parallel`` before they import
    torch, and run their folds with that many torch threads (``training.num_threads`` of the config is replaced),
    so the folds never oversubscribe the cores, unless ``parallel`` itself exceeds them (a warning is logged).
    """

    def __init__(self, *, parallel: int = 1, cores: int | None = None) -> None:
        if parallel < 1:
            raise ConfigError(f"--parallel must be at least 1, got {parallel}.")
        self.parallel = parallel
        self.cores = cores or available_cores()
        self.threads = max(1, self.cores // parallel)

    def run(self, tasks: list[FoldTask], *, run_inline: Callable[[FoldTask], dict], log: Log,
            on_done: OnDone | None = None) -> None:
        """Run every task; ``run_inline`` runs one in this process (it reuses the driver's loaded data).

        ``on_done(task, result)`` is called in this process as each task run by a worker ends (default: a
        "fold k done" line on ``log``); a task run inline is ``run_inline``'s to report.
        """
        if self.parallel > self.cores:
            log(_too_parallel(self.parallel, self.cores))
        if self.parallel == 1 or len(tasks) <= 1:
            for task in tasks:
                run_inline(task)
            return
        context = multiprocessing.get_context("spawn")
        with _thread_env(self.threads), ProcessPoolExecutor(self.parallel, mp_context=context) as pool:
            pending = {pool.submit(execute_fold_task, task, self.threads): task for task in tasks}
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        task = pending.pop(future)
                        (on_done or _log_fold(log))(task, future.result())
            except BaseException:
                for future in pending:
                    future.cancel()
                raise


class RayExecutor:
    """Each (variant, fold) is a Ray task declaring its CPUs and GPUs; a lost worker's task is retried.

    With no ``address`` a local Ray is started with ``num_cpus`` CPUs (default: this machine's cores) and shut
    down afterwards; with one, the driver joins that cluster. The run store must then be on a file system
    every node sees (the tasks write their folds into it).
    """

    def __init__(
        self,
        options: RayOptions,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        task_fn: Callable[[FoldTask, int | None], dict[str, Any]] = execute_fold_task,
    ) -> None:
        self.options = options
        self.address = address
        self.num_cpus = num_cpus
        self.task_fn = task_fn  # what each Ray task runs (tests wrap it to kill workers)

    def run(self, tasks: list[FoldTask], *, run_inline: Callable[[FoldTask], dict], log: Log,
            on_done: OnDone | None = None) -> None:
        """Run every task as a Ray task; ``on_done`` as for :meth:`LocalExecutor.run` (``run_inline`` is unused).

        Raises:
            ConfigError: Ray is not installed, or no node of a local Ray has the CPUs and GPUs a task asks for
                (on a cluster at ``address`` that is a warning: an autoscaler may add such a node).
        """
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'medclf[ray]'.") from None
        started = not ray.is_initialized()
        if started:
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                if self.num_cpus and self.num_cpus > available_cores():
                    log(_too_parallel(self.num_cpus, available_cores()))
                ray.init(num_cpus=self.num_cpus or available_cores(), include_dashboard=False, log_to_driver=False)
        try:
            if tasks and (too_big := _too_big(ray, self.options)):
                if not self.address:  # Ray would hold the tasks pending for ever, silently
                    raise ConfigError(f"{too_big}.")
                log(f"warning: {too_big}; the folds wait until the cluster has such a node (its autoscaler may add "
                    "one).")
            self._run(ray, tasks, on_done or _log_fold(log))
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray: Any, tasks: list[FoldTask], on_done: OnDone) -> None:
        threads = max(1, int(self.options.num_cpus_per_task))
        remote = ray.remote(
            num_cpus=self.options.num_cpus_per_task,
            num_gpus=self.options.num_gpus_per_task,
            max_retries=self.options.max_retries,
        )(self.task_fn)
        pending = {remote.remote(task, threads): task for task in tasks}
        try:
            while pending:
                finished, _ = ray.wait(list(pending), num_returns=1)
                for ref in finished:
                    task = pending.pop(ref)
                    on_done(task, ray.get(ref))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise


Executor = LocalExecutor | RayExecutor


def make_executor(kind: str, *, ray: RayOptions, parallel: int = 1, address: str | None = None) -> Executor:
    """The executor ``kind`` names, ``parallel`` folds at once.

    ``local``: in this process one after the other (``parallel`` 1), else in ``parallel`` worker processes.
    ``ray``: each fold a Ray task declaring ``ray``'s CPUs and GPUs, on the cluster at ``address``, or on a local
    Ray of ``parallel`` tasks' CPUs (every core when ``parallel`` is 1).

    Raises:
        ConfigError: an unknown ``kind``, an ``address`` without Ray, or a ``parallel`` below 1.
    """
    if kind not in ("local", "ray"):
        raise ConfigError(f"--executor must be local or ray, got {kind!r}.")
    if address and kind != "ray":
        raise ConfigError("--address joins a Ray cluster; give it with --executor ray.")
    if parallel < 1:
        raise ConfigError(f"--parallel must be at least 1, got {parallel}.")
    if kind == "ray":
        num_cpus = math.ceil(parallel * ray.num_cpus_per_task) if parallel > 1 else None
        return RayExecutor(ray, address=address, num_cpus=num_cpus)
    return LocalExecutor(parallel=parallel)


def study_executor(
    kind: str = "local", *, parallel: int = 1, address: str | None = None, gpus_per_fold: float = 0.0
) -> Executor:
    """The executor of one study's folds (``medclf run --executor --parallel --gpus-per-fold``).

    Both kinds run ``parallel`` folds at once with the same thread budget, this machine's cores // ``parallel``,
    so their folds give the same metrics: a Ray task declares that many CPUs (and ``gpus_per_fold`` GPUs) and
    sets its torch threads to it, as a local worker process does.

    Raises:
        ConfigError: as :func:`make_executor`, or a ``gpus_per_fold`` outside [0, 1] or without Ray.
    """
    if not 0 <= gpus_per_fold <= 1:  # a fraction lets folds share a GPU; a Ray task trains on one device
        raise ConfigError(f"--gpus-per-fold must be between 0 and 1, got {gpus_per_fold:g}: a fold trains on one "
                          "GPU (0.5: two folds share one). For several GPUs per fold, run medclf run under torchrun "
                          "(docs/scaling.md).")
    if gpus_per_fold and kind != "ray":
        raise ConfigError("--gpus-per-fold is what each fold's Ray task asks Ray for; give it with --executor ray "
                          "(without Ray, every fold trains on training.device).")
    if parallel < 1:
        raise ConfigError(f"--parallel must be at least 1, got {parallel}.")
    per_fold = max(1, available_cores() // parallel)
    ray = RayOptions(num_cpus_per_task=per_fold, num_gpus_per_task=gpus_per_fold)
    return make_executor(kind, ray=ray, parallel=parallel, address=address)


def _too_parallel(parallel: int, cores: int) -> str:
    return (f"warning: --parallel {parallel} exceeds the {cores} CPU cores this process may use, so the folds "
            f"running at once compete for the cores; it is no faster than with --parallel {cores}.")


def _log_fold(log: Log) -> OnDone:
    """The default ``on_done``: one line per finished fold."""

    def done(task: FoldTask, result: dict[str, Any]) -> None:
        train_s = result.get("timing", {}).get("train_s", 0.0)
        log(f"{task.variant}: fold {task.fold.index} done ({train_s:.0f} s)")

    return done


def _too_big(ray: Any, options: RayOptions) -> str | None:
    """Why no live node of the Ray cluster can run a task of ``options`` (None when one can)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)]
    if any(r.get("CPU", 0) >= options.num_cpus_per_task and r.get("GPU", 0) >= options.num_gpus_per_task
           for r in nodes):
        return None
    cpus = max((r.get("CPU", 0) for r in nodes), default=0)
    gpus = max((r.get("GPU", 0) for r in nodes), default=0)
    return (f"each fold asks Ray for {options.num_cpus_per_task:g} CPU(s) and {options.num_gpus_per_task:g} GPU(s), "
            f"but no node of the Ray cluster has that much (the largest has {cpus:g} CPUs and {gpus:g} GPUs). Ask "
            "for less: a larger --parallel or a smaller --gpus-per-fold (medclf run), sweep.ray.num_cpus_per_task or "
            "num_gpus_per_task (medclf sweep)")
