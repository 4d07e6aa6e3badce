"""Hooks into a whole study (:class:`StudyCallback`), fed per epoch by a training callback; status messages as logs.

A study calls its callbacks in the order given, each hook in turn. The training loop is not changed for them:
:class:`EpochRelay` is a :class:`medclf.training.Callback` that hands each epoch's logs on to the study callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medclf.training import Callback

if TYPE_CHECKING:
    from medclf.config import Config
    from medclf.training.loop import Trainer

__all__ = ["EpochRelay", "Log", "StudyCallback", "log_to"]

Log = Callable[[str], None]


class StudyCallback:
    """Do-nothing hooks called by :func:`medclf.run_study`; subclass it and override the hooks you need.

    Hooks, in the order a study calls them:

    - ``on_study_start(config, out)``: the run folder ``out`` (a :class:`~pathlib.Path`) is ready (config.yaml,
      data.json and splits.json written) and the validated :class:`~medclf.config.Config` is about to run.
    - ``on_fold_start(fold)``: fold ``fold`` (its index, an int) starts training. Not called for a fold that a
      resumed study skips because it is already complete.
    - ``on_epoch_end(fold, epoch, logs)``: an epoch of fold ``fold`` ended; ``epoch`` counts from 1 and ``logs``
      (a copy: changing it changes nothing) is the row that fold's ``history.csv`` gains: ``epoch``, ``step``,
      ``lr``, ``train_loss``, ``val_loss``, ``val_<metric>``..., ``time_s`` (and ``stage`` for staged fine-tuning).
    - ``on_fold_end(fold, metrics)``: fold ``fold`` is complete; ``metrics`` is its ``metrics.json`` as a dict
      (``metrics[split][name]``: the scores of the ``val``, ``holdout`` and ``test`` splits, ``best_epoch``...).
      Also called, with the ``metrics.json`` already on disk, for a fold that a resumed study skips, so every
      fold of the study reaches ``on_fold_end`` once per call.
    - ``on_study_end(summary)``: ``summary.json`` is written; ``summary`` is its content.
    - ``on_report(path)``: the HTML report was written at ``path`` (``RUN_DIR/report.html``, with ``figures/``
      and ``tables/`` beside it). Not called when the study runs with ``report=False``.

    A fold that an executor runs in a worker process or on Ray (``medclf run --parallel``, ``--executor ray``)
    cannot call back while it trains: when it has ended, the driver calls its ``on_fold_start``, then
    ``on_epoch_end`` for each row of its ``history.csv`` (numbers, ``epoch`` an int), then ``on_fold_end``.

    An exception raised by a hook is not caught: the study stops there and it propagates to the caller. Folds
    completed before it stay in the run folder, so running the study again resumes after them.
    """

    def on_study_start(self, config: Config, out: Path) -> None: ...

    def on_fold_start(self, fold: int) -> None: ...

    def on_epoch_end(self, fold: int, epoch: int, logs: dict[str, Any]) -> None: ...

    def on_fold_end(self, fold: int, metrics: dict[str, Any]) -> None: ...

    def on_study_end(self, summary: dict[str, Any]) -> None: ...

    def on_report(self, path: Path) -> None: ...


class EpochRelay(Callback):
    """The training callback that passes each epoch of fold ``fold`` on to the study callbacks' ``on_epoch_end``."""

    def __init__(self, callbacks: Sequence[StudyCallback], fold: int) -> None:
        self.callbacks, self.fold = list(callbacks), fold

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(self.fold, epoch, dict(logs))  # a copy: the loop's own row stays as logged


def log_to(logger: logging.Logger) -> Log:
    """A ``log`` callable that sends status messages to ``logger``.

    Messages that start with ``warning:`` are logged at WARNING level, every other one at INFO.
    """

    def log(message: str) -> None:
        # stacklevel: the record names the module and line that logged, not this function
        logger.log(logging.WARNING if message.startswith("warning:") else logging.INFO, message, stacklevel=2)

    return log
