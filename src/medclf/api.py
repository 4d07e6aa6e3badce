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
from medclf.experiments.tracking import tracking
from medclf.experiments.validation import load_checked_config, parse_checked_config
from medclf.locking import hold_run_folder

__all__ = ["StudyCallback", "run_study"]


def run_study(
    config: Config | Mapping[str, Any] | str | Path,
    out: str | Path | None = None,
    *,
    callbacks: Sequence[StudyCallback] = (),
    overwrite: bool = False,
    report: bool = True,
    progress: Any = None,
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

    Returns:
        The summary, as written to ``out/summary.json``.

    Raises:
        ConfigError: the config is not valid (names the key, the value and what would be accepted).
        DataError: the data cannot be read as the config describes it.
        RunFolderError: ``out`` holds a different study and ``overwrite`` is False, or another process writes it.
        Exception: whatever a callback raises, unchanged; folds completed before it stay, so a second call resumes.
    """
    config = _checked(config)
    out = Path(out) if out is not None else Path("runs") / config.name
    with hold_run_folder(out, command=f"medclf.run_study({config.name!r})"), tracking(config) as trackers:
        hooks = [*trackers, *callbacks]
        summary = _study.run_study(config, out, overwrite=overwrite, progress=progress, callbacks=hooks)
        if report:
            from medclf.reporting import write_report

            path = write_report(out)
            for hook in hooks:
                hook.on_report(path)
    return summary


def _checked(config: Config | Mapping[str, Any] | str | Path) -> Config:
    """``config`` as a checked :class:`Config`, whichever of the accepted forms it came in."""
    if isinstance(config, Config):
        return config  # checked by the study itself, as every caller's config is
    if isinstance(config, Mapping):
        return parse_checked_config(dict(config), origin="the config dict")
    return load_checked_config(Path(config))
