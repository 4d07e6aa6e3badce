"""The Callback base and the callbacks the fit loop ships with (best-weights keeping, progress).

Hooks are plain methods named ``on_<unit>_<start|end>`` that do nothing by default; the loop calls them in
order. Early stopping, checkpointing and progress display are callbacks, never flags inside the loop.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from medclf.atomic import atomic_write_csv
from medclf.evaluation.metrics import higher_is_better

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from medclf.config import TrainingConfig
    from medclf.training.loop import Trainer

__all__ = ["BestWeights", "Callback", "EarlyStopping", "HistoryCSV", "RichProgress", "check_logged", "monitor_mode"]


def monitor_mode(cfg: TrainingConfig) -> Literal["min", "max"]:
    """Whether lower or higher ``cfg.monitor`` is better: ``early_stopping.mode``, or ``min`` for losses."""
    if cfg.early_stopping.mode != "auto":
        return cfg.early_stopping.mode
    return "max" if higher_is_better(cfg.monitor) else "min"


class Callback:
    """Do-nothing hooks; subclasses override the ones they need."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_stage_start(self, trainer: Trainer, stage: int) -> None:
        """A stage of staged fine-tuning begins (stage 0 also for an unstaged fit), after ``on_fit_start``."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        """``loss`` is the batch's detached loss tensor; call ``.item()`` only when needed (it syncs a GPU)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


def check_logged(monitor: str, logs: dict[str, Any], *, key: str, required: bool = True) -> None:
    """A ConfigError when ``monitor`` is not among the epoch's logs.

    ``required=False`` lets a ``val_`` value be missing when the fit logs no validation values at all.
    """
    from medclf.errors import ConfigError

    unvalidated = monitor.startswith("val_") and not any(k.startswith("val_") for k in logs)
    if monitor not in logs and (required or not unvalidated):
        logged = ", ".join(k for k in logs if k not in ("epoch", "stage", "step", "lr", "time_s"))
        raise ConfigError(
            f"{key}: {monitor!r} is not logged by this fit; logged values are {logged}. "
            "(val_ values need a validation split; multi-label metrics a multi-label task.)"
        )


class _Best:
    """The best monitored value seen so far, its epoch and a copy of the weights then (ties: the earlier)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.score = math.inf if mode == "min" else -math.inf
        self.epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def offer(self, value: float, epoch: int, model: torch.nn.Module) -> None:
        never_scored = math.isinf(self.score)
        better = not math.isnan(value) and (value < self.score if self.mode == "min" else value > self.score)
        # no monitored value yet (e.g. no validation data): the latest epoch stands, not the first one
        if better or (math.isnan(value) and never_scored):
            self.score = value if not math.isnan(value) else self.score
            self.epoch = epoch
            self.state = copy.deepcopy(model.state_dict())


class BestWeights(Callback):
    """Keep the weights of the epoch with the best monitored value, overall and within the current stage.

    ``best_*`` is the whole fit's best (what is restored at the end); ``stage_best`` the current stage's (what the
    next stage of staged fine-tuning starts from).
    """

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor, self.mode = monitor, mode
        self._overall = _Best(mode)
        self.stage_best = _Best(mode)

    @property
    def best_score(self) -> float:
        return self._overall.score

    @property
    def best_epoch(self) -> int | None:
        return self._overall.epoch

    @property
    def best_state(self) -> dict[str, torch.Tensor] | None:
        return self._overall.state

    def on_stage_start(self, trainer: Trainer, stage: int) -> None:
        self.stage_best = _Best(self.mode)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        check_logged(self.monitor, logs, key="training.monitor", required=False)
        value = float(logs.get(self.monitor, math.nan))
        # the weights validation scored: the weight EMA's when training.ema is on
        self._overall.offer(value, epoch, trainer.eval_model)
        self.stage_best.offer(value, epoch, trainer.eval_model)


class EarlyStopping(Callback):
    """Stop a stage when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Args:
        monitor: a key of the epoch logs (``val_<metric>``, ``val_loss``, ``train_loss``).
        mode: ``min`` or ``max``.
        patience: epochs without improvement tolerated.
        min_delta: the improvement that counts, absolute, or relative to the best value when ``relative``.
    """

    def __init__(self, monitor: str, mode: str, *, patience: int, min_delta: float = 0.0, relative: bool = False):
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.relative = min_delta, relative
        self.stopped_epoch: int | None = None
        self.on_stage_start(None, 0)  # type: ignore[arg-type]

    def on_stage_start(self, trainer: Trainer, stage: int) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0

    def _improved(self, value: float) -> bool:
        if math.isinf(self.best):
            return True
        delta = self.min_delta * abs(self.best) if self.relative else self.min_delta
        return value < self.best - delta if self.mode == "min" else value > self.best + delta

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        check_logged(self.monitor, logs, key="training.early_stopping.monitor")
        value = float(logs[self.monitor])
        if not math.isnan(value) and self._improved(value):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.should_stop = True
            self.stopped_epoch = epoch


class HistoryCSV(Callback):
    """Rewrite ``path`` (atomically) after every epoch, so a long or killed fit keeps its curves on disk."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        atomic_write_csv(self.path, trainer.history, list(trainer.history[0]))


class RichProgress(Callback):
    """Drive an epoch bar and a batch bar of a shared rich ``Progress``."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress, self.label = progress, label
        self.epoch_task: TaskID | None = None
        self.batch_task: TaskID | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.epoch_task = self.progress.add_task(f"{self.label} epochs", total=trainer.cfg.epochs)
        self.batch_task = self.progress.add_task(f"{self.label} batches", total=trainer.steps_per_epoch)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.progress.reset(self.batch_task, total=trainer.steps_per_epoch)

    def on_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        self.progress.update(self.batch_task, advance=1)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        monitor = trainer.cfg.monitor
        self.progress.update(
            self.epoch_task, advance=1,
            description=f"{self.label} epochs ({monitor} {logs.get(monitor, float('nan')):.4f})",
        )

    def on_fit_end(self, trainer: Trainer) -> None:
        self.progress.remove_task(self.batch_task)
        self.progress.remove_task(self.epoch_task)
