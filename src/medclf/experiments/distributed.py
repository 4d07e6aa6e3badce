"""A study under torchrun: every rank fits each fold data-parallel; rank 0 alone prepares, evaluates and writes.

``torchrun --nproc-per-node N -m medclf run CONFIG`` starts N processes that all reach
:func:`medclf.experiments.study.run_study`, which hands them to :func:`run_distributed_study`:

1. Every rank joins the process group (:func:`medclf.training.distributed.init_from_env`), for the process's life.
2. Rank 0 runs the ordinary study (the same code as one process: run folder, data, folds, audit, resume,
   callbacks, summary) with a :class:`RankExecutor`, while the other ranks wait for its plan.
3. The executor broadcasts the plan, the folds still to train (complete ones are skipped on every rank, and no
   rank but 0 reads the run folder), then trains each fold in rank 0's process: its fit, evaluation, files,
   history and ``complete.json``.
4. The other ranks load the data themselves, through the decode cache rank 0 has just filled (or memory-mapped
   from it), check its fingerprint against rank 0's, and fit each planned fold with
   :func:`~medclf.experiments.study.fit_fold` and no callback: nothing of theirs is written.
   The :class:`~medclf.training.Trainer` shards each global batch and gathers validation, so every rank keeps
   the same best epoch and stops at the same epoch.
5. Rank 0 broadcasts the summary, so every rank returns the same value once rank 0 has written it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medclf.config import Config
from medclf.data import load_dataset
from medclf.data.splitting import Fold
from medclf.errors import ConfigError, DataError, MedclfError
from medclf.experiments.callbacks import Log, StudyCallback, log_to
from medclf.experiments.executors import Executor, FoldTask, LocalExecutor
from medclf.experiments.study import fit_fold, run_study
from medclf.training.distributed import broadcast_object, init_from_env, is_writer

__all__ = ["RankExecutor", "run_distributed_study"]

_log = log_to(logging.getLogger(__name__))  # the default `log`, as run_study's


@dataclass(frozen=True)
class _Plan:
    """What rank 0 tells the other ranks once the run folder is prepared, or why it could not be."""

    folds: list[Fold] = field(default_factory=list)  # the folds to train, as the audit left them (complete: skipped)
    fingerprint: str = ""  # the data's, for the other ranks to check their own load against
    error: str | None = None  # the kind of error that stopped rank 0 before training (it prints the message)


class RankExecutor:
    """Rank 0's executor: tells the other ranks which folds to train, then trains each one here, in order."""

    def __init__(self) -> None:
        self.planned = False  # whether the other ranks have their plan (else they still wait for one)

    def run(self, tasks: list[FoldTask], *, run_inline: Callable[[FoldTask], dict], log: Log,
            on_done: Callable[[FoldTask, dict[str, Any]], None] | None = None) -> None:
        """Broadcast the plan of ``tasks``, then ``run_inline`` each (the other ranks fit the same folds)."""
        fingerprint = tasks[0].data_fingerprint if tasks else ""
        broadcast_object(_Plan(folds=[task.fold for task in tasks], fingerprint=fingerprint))
        self.planned = True
        for task in tasks:
            run_inline(task)


def run_distributed_study(
    config: Config,
    out: Path,
    *,
    overwrite: bool = False,
    progress: Any = None,
    log: Log = _log,
    callbacks: Sequence[StudyCallback] = (),
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Run (or resume) ``config`` into ``out`` as one rank of a torchrun job; the arguments of ``run_study``.

    ``progress``, ``log`` and ``callbacks`` are used on rank 0 only. ``executor`` may only be the default one
    (in this process, one fold after the other): under torchrun the ranks train each fold together.

    Returns:
        The summary rank 0 wrote to ``out/summary.json``, on every rank.

    Raises:
        ConfigError: another executor is given, or the global ``training.batch_size`` leaves a rank fewer than
            two images of a batch.
        DataError: this rank loaded other data than rank 0 (the data changed between the two loads).
        MedclfError: on the other ranks, when rank 0 failed before training (its own error names the cause).
    """
    training = config.training
    cuda = training.device == "cuda" or (training.device == "auto" and torch.cuda.is_available())
    _rank, world_size = init_from_env(cuda=cuda)
    _check(config, world_size, executor)
    if is_writer():
        return _lead(config, Path(out), overwrite=overwrite, progress=progress, log=log, callbacks=callbacks)
    return _follow(config)


def _check(config: Config, world_size: int, executor: Executor | None) -> None:
    if executor is not None and not (isinstance(executor, LocalExecutor) and executor.parallel == 1):
        raise ConfigError(
            "--executor ray and --parallel run folds side by side, but under torchrun every process trains each "
            "fold together: drop them (or run the folds on Ray without torchrun; docs/scaling.md)."
        )
    if config.training.batch_size < 2 * world_size:
        raise ConfigError(
            f"training.batch_size {config.training.batch_size} is the global batch, shared by the {world_size} "
            f"processes torchrun started; each needs at least 2 images of it (BatchNorm): use a batch_size of at "
            f"least {2 * world_size}, or fewer processes."
        )


def _lead(config: Config, out: Path, *, overwrite: bool, progress: Any, log: Log,
          callbacks: Sequence[StudyCallback]) -> dict[str, Any]:
    """Rank 0: the ordinary study with a :class:`RankExecutor`; then the summary to every rank."""
    ranks = RankExecutor()
    try:
        summary = run_study(config, out, overwrite=overwrite, progress=progress, log=log, callbacks=callbacks,
                            executor=ranks)
    except BaseException as error:
        if not ranks.planned:  # the other ranks still wait for a plan: release them with the reason
            broadcast_object(_Plan(error=type(error).__name__))  # rank 0 prints the message itself
        raise
    return broadcast_object(summary)


def _follow(config: Config) -> dict[str, Any]:
    """A rank but 0: wait for the plan, load the data, fit each planned fold, return rank 0's summary."""
    plan: _Plan = broadcast_object(None)  # type: ignore[arg-type]
    if plan.error is not None:
        raise MedclfError(f"rank 0 stopped before training ({plan.error}); its own message says what to fix.")
    if plan.folds:
        data = load_dataset(config.data)  # through the decode cache rank 0 has just filled
        if data.fingerprint != plan.fingerprint:
            raise DataError(
                f"the data this process loaded (fingerprint {data.fingerprint}) is not the data rank 0 loaded "
                f"({plan.fingerprint}): it changed between the two loads. Run the same command again.",
                path=getattr(config.data.source, "path", None),
            )
        for fold in plan.folds:
            fit_fold(config, data, fold, callbacks=[])  # rank 0's copy of the model is the one written
    return broadcast_object(None)  # type: ignore[arg-type]
