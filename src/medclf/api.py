"""The Python API: run a study from Python, with callbacks, as ``medclf run`` does from the shell.

It sits at the command line's layer (above experiments and reporting) because, like ``medclf run``, it also
writes the report. ``medclf run`` and ``medclf demo`` call :func:`run_study`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medclf.config import Config
from medclf.experiments import study as _study
from medclf.experiments.callbacks import StudyCallback
from medclf.experiments.executors import Executor, RayExecutor
from medclf.experiments.tracking import tracking
from medclf.experiments.validation import load_checked_config, parse_checked_config
from medclf.locking import hold_run_folder
from medclf.training.distributed import is_writer

__all__ = ["StudyCallback", "run_study"]


def run_study(
    config: Config | Mapping[str, Any] | str | Path,
    out: str | Path | None = None,
    *,
    callbacks: Sequence[StudyCallback] = (),
    overwrite: bool = False,
    report: bool = True,
    progress: Any = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Run (or resume) a cross-validated study into a run folder, then write its report.

    The run folder is the one ``medclf run`` writes (docs/outputs.md); running the same call again resumes it.
    Messages go to the ``medclf`` loggers (:mod:`logging`): fold lines at INFO, warnings at WARNING.

    Args:
        config: a :class:`~medclf.config.Config`, a dict of the YAML's sections (relative paths: from the working
            directory) or the path of a YAML config (relative paths: from its folder). Checked as every command
            checks a config, before any data is read.
        out: the run folder (default: ``runs/<config name>`` in the working directory).
        callbacks: :class:`StudyCallback` objects, their hooks called in this order after those of the trackers
            that ``config.tracking`` turns on (TensorBoard, MLflow).
        overwrite: replace a run of a different config in ``out`` instead of refusing.
        report: write ``out/report.html`` (figures and tables beside it) and call ``on_report``.
        progress: a ``rich.progress.Progress`` to draw fold, epoch and batch bars on (the command line's), or None.
        executor: where the folds run: None, in this process one after the other; else an executor of
            :func:`medclf.experiments.executors.study_executor` (``medclf run --executor --parallel``): folds in
            worker processes or Ray tasks, their callbacks called when each has ended (docs/scaling.md).

    Returns:
        The summary, as written to ``out/summary.json``.

    Raises:
        ConfigError: the config is not valid (names the key, the value and what would be accepted).
        DataError: the data cannot be read as the config describes it.
        RunFolderError: ``out`` holds a different study and ``overwrite`` is False, or another process writes it.
        Exception: whatever a callback raises, unchanged; folds completed before it stay, so a second call resumes.
    """
    on_cluster = isinstance(executor, RayExecutor) and bool(executor.address)
    config = _checked(config, check_device=not on_cluster)  # a cluster's workers check their own device
    out = Path(out) if out is not None else Path("runs") / config.name
    if not is_writer():  # a torchrun rank but 0 trains its share of each fold; rank 0 locks, tracks and reports
        return _study.run_study(config, out, overwrite=overwrite)
    with hold_run_folder(out, command=f"medclf.run_study({config.name!r})"), tracking(config) as trackers:
        hooks = [*trackers, *callbacks]
        summary = _study.run_study(config, out, overwrite=overwrite, progress=progress, callbacks=hooks,
                                   executor=executor)
        if report:
            from medclf.reporting import write_report

            path = write_report(out)
            for hook in hooks:
                hook.on_report(path)
    return summary


def _checked(config: Config | Mapping[str, Any] | str | Path, *, check_device: bool = True) -> Config:
    """``config`` as a checked :class:`Config`, whichever of the accepted forms it came in."""
    if isinstance(config, Config):
        return config  # checked by the study itself, as every caller's config is
    if isinstance(config, Mapping):
        return parse_checked_config(dict(config), origin="the config dict", check_device=check_device)
    return load_checked_config(Path(config), check_device=check_device)
