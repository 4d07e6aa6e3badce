"""Experiment tracking as study callbacks: TensorBoard event files and MLflow runs, built from ``config.tracking``.

The libraries are imported only when a study turns tracking on (MLflow alone takes seconds to import). Both
trackers read what a resumed study skipped (a complete fold's ``metrics.json`` and ``history.csv``) from the run
folder, so the tracked record of a resumed study is as complete as that of one run in a single go.
"""

from __future__ import annotations

import csv
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Real
from pathlib import Path
from typing import Any

from medclf import __version__, runfolder
from medclf.config import Config, TrackingConfig, config_fingerprint
from medclf.errors import ConfigError
from medclf.experiments.callbacks import StudyCallback
from medclf.runfolder import fold_dir

__all__ = ["MLflowTracker", "TensorBoardTracker", "Tracker", "default_mlflow_uri", "fold_finals", "read_history",
           "summary_means", "tracking"]

TENSORBOARD = "tensorboard"  # RUN_DIR/tensorboard/fold-<k>, RUN_DIR/tensorboard/summary
_NOT_PLOTTED = ("epoch",)  # the step of every per-epoch value, not a value of its own


class Tracker(StudyCallback):
    """A study callback that holds open writers or runs: :meth:`close` ends them, failed or not."""

    def close(self, *, failed: bool) -> None: ...


@contextmanager
def tracking(config: Config) -> Iterator[list[Tracker]]:
    """The trackers ``config.tracking`` asks for; on leaving, each is closed (as failed when an error leaves)."""
    trackers: list[Tracker] = []
    if config.tracking.tensorboard:
        trackers.append(TensorBoardTracker())
    if config.tracking.mlflow:
        trackers.append(MLflowTracker(config.tracking, name=config.name))
    try:
        yield trackers
    except BaseException:
        for tracker in trackers:
            tracker.close(failed=True)
        raise
    for tracker in trackers:
        tracker.close(failed=False)


# ------------------------------------------------------------------------------------------------ TensorBoard
class TensorBoardTracker(Tracker):
    """Per-epoch logs of each fold in ``RUN_DIR/tensorboard/fold-<k>``; the summary's means in ``.../summary``."""

    def __init__(self) -> None:
        try:  # here, so that a missing package is reported before any data is read
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        except ImportError as error:
            raise ConfigError(f"tracking.tensorboard: true needs the tensorboard package ({error}); "
                              "install it with pip install tensorboard, or set tracking.tensorboard: false.") from None
        self._writer_class = SummaryWriter
        self.root = Path()
        self.writers: dict[str, Any] = {}

    def on_study_start(self, config: Config, out: Path) -> None:
        self.root = Path(out) / TENSORBOARD

    def _open(self, name: str, *, clear: bool) -> Any:
        folder = self.root / name
        if clear:
            shutil.rmtree(folder, ignore_errors=True)  # a retrained fold's earlier, unfinished curves
        self.writers[name] = self._writer_class(log_dir=str(folder))
        return self.writers[name]

    def _close(self, name: str) -> None:
        writer = self.writers.pop(name, None)
        if writer is not None:
            writer.close()

    def on_fold_start(self, fold: int) -> None:
        self._open(f"fold-{fold}", clear=True)

    def on_epoch_end(self, fold: int, epoch: int, logs: dict[str, Any]) -> None:
        writer = self.writers[f"fold-{fold}"]
        for key, value in _numbers(logs):
            writer.add_scalar(key, value, epoch)

    def on_fold_end(self, fold: int, metrics: dict[str, Any]) -> None:
        name = f"fold-{fold}"
        if name not in self.writers and not any((self.root / name).glob("events.out.tfevents.*")):
            # skipped by a resumed study that was first run without TensorBoard: its curves from history.csv
            writer = self._open(name, clear=True)
            for row in read_history(fold_dir(self.root.parent, fold) / runfolder.HISTORY):
                for key, value in _numbers(row):
                    writer.add_scalar(key, value, int(row["epoch"]))
        self._close(name)

    def on_study_end(self, summary: dict[str, Any]) -> None:
        writer = self._open("summary", clear=True)
        for key, value in summary_means(summary).items():
            writer.add_scalar(key, value, 0)
        self._close("summary")

    def close(self, *, failed: bool) -> None:
        for name in list(self.writers):
            self._close(name)


# ----------------------------------------------------------------------------------------------------- MLflow
def default_mlflow_uri(cwd: Path | None = None) -> tuple[str, str]:
    """The local store: ``(tracking URI, artifact location)`` in ``mlruns/`` of ``cwd`` (the working directory).

    MLflow's file store refuses to start unless an environment variable opts in, so the local default is its
    SQLite backend, ``mlruns/mlflow.db``, with artifacts in ``mlruns/artifacts``.
    """
    root = (Path(cwd) if cwd is not None else Path.cwd()).absolute() / "mlruns"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


class MLflowTracker(Tracker):
    """One MLflow run per study (params, tags, summary means, report and summary.json) and a nested run per fold.

    Args:
        config: the ``tracking`` section (``mlflow_uri``, ``experiment``).
        name: the study's name: the parent run's name, and the experiment's unless ``config.experiment`` is set.
    """

    def __init__(self, config: TrackingConfig, *, name: str) -> None:
        try:  # here, so that a missing package is reported before any data is read
            from mlflow import MlflowClient
        except ImportError as error:
            raise ConfigError(f"tracking.mlflow: true needs MLflow ({error}); install it with pip install "
                              "mlflow-skinny, or set tracking.mlflow: false.") from None
        self._client_class = MlflowClient
        self.config, self.name = config, name
        self.parent: str | None = None
        self.folds: dict[int, str] = {}  # fold index: its run id, while the fold runs

    def on_study_start(self, config: Config, out: Path) -> None:
        self.out = Path(out)
        if self.config.mlflow_uri is None:
            uri, artifacts = default_mlflow_uri()
        else:
            uri, artifacts = self.config.mlflow_uri, None  # the store (or server) decides where artifacts go
        self.client = self._client_class(tracking_uri=uri)
        experiment = self.config.experiment or self.name
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=artifacts)
        tags = {"medclf.run_dir": str(self.out.absolute()), "medclf.config_fingerprint": config_fingerprint(config),
                "medclf.version": __version__}
        self.experiment_id = experiment_id
        self.parent = self.client.create_run(experiment_id, run_name=self.name, tags=tags).info.run_id
        self._log(self.parent, params=_params(config))

    def _log(self, run_id: str, *, metrics: dict[str, float] | None = None, step: int = 0,
             params: dict[str, str] | None = None) -> None:
        from mlflow.entities import Metric, Param

        stamp = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(_key(k), float(v), stamp, step) for k, v in (metrics or {}).items()],
            params=[Param(k, v) for k, v in (params or {}).items()],
        )

    def _fold_run(self, fold: int, *, resumed: bool) -> str:
        tags = {"mlflow.parentRunId": self.parent, "medclf.fold": str(fold)}
        if resumed:
            tags["medclf.resumed"] = "true"  # completed in an earlier call; logged from the run folder's files
        run_id = self.client.create_run(self.experiment_id, run_name=f"fold-{fold}", tags=tags).info.run_id
        self.folds[fold] = run_id
        return run_id

    def on_fold_start(self, fold: int) -> None:
        self._fold_run(fold, resumed=False)

    def on_epoch_end(self, fold: int, epoch: int, logs: dict[str, Any]) -> None:
        self._log(self.folds[fold], metrics=dict(_numbers(logs)), step=epoch)

    def on_fold_end(self, fold: int, metrics: dict[str, Any]) -> None:
        if fold not in self.folds:  # skipped by a resumed study: its epochs from history.csv
            run_id = self._fold_run(fold, resumed=True)
            for row in read_history(fold_dir(self.out, fold) / runfolder.HISTORY):
                self._log(run_id, metrics=dict(_numbers(row)), step=int(row["epoch"]))
        run_id = self.folds.pop(fold)
        self._log(run_id, metrics=fold_finals(metrics), step=int(metrics.get("epochs_run") or 0))
        self.client.set_terminated(run_id, "FINISHED")

    def on_study_end(self, summary: dict[str, Any]) -> None:
        self._log(self.parent, metrics=summary_means(summary))
        self.client.log_artifact(self.parent, str(self.out / runfolder.SUMMARY))

    def on_report(self, path: Path) -> None:
        self.client.log_artifact(self.parent, str(path))
        for folder in ("figures", "tables"):  # the report's images and tables, beside it in the run folder
            if (Path(path).parent / folder).is_dir():
                self.client.log_artifacts(self.parent, str(Path(path).parent / folder), artifact_path=folder)

    def close(self, *, failed: bool) -> None:
        status = "FAILED" if failed else "FINISHED"
        for run_id in [*self.folds.values(), *([self.parent] if self.parent else [])]:
            self.client.set_terminated(run_id, status)
        self.folds, self.parent = {}, None


# --------------------------------------------------------------------------------------------------- values
def read_history(path: Path) -> list[dict[str, float]]:
    """A fold's ``history.csv`` as rows of numbers (empty cells left out)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


def _numbers(logs: dict[str, Any]) -> Iterator[tuple[str, float]]:
    for key, value in logs.items():
        if key not in _NOT_PLOTTED and isinstance(value, Real) and not isinstance(value, bool):
            yield key, float(value)


def _flat_numbers(d: dict[str, Any], prefix: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            found |= _flat_numbers(value, f"{prefix}{key}/")
        elif isinstance(value, Real) and not isinstance(value, bool):
            found[f"{prefix}{key}"] = float(value)
    return found


def fold_finals(metrics: dict[str, Any]) -> dict[str, float]:
    """A fold's final scores from its ``metrics.json``: ``<split>/<metric>`` (``<split>/patient/<metric>``...)."""
    finals = _flat_numbers(metrics.get("metrics", {}), "")
    for key in ("best_epoch", "epochs_run", "best_score"):
        value = metrics.get(key)
        if isinstance(value, Real) and not isinstance(value, bool):
            finals[key] = float(value)
    return finals


def summary_means(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's means across folds, ``<split>/<metric>``, and the ensemble's, ``ensemble_<split>/<metric>``."""
    means: dict[str, float] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for key, value in d.items():
            if isinstance(value, dict) and isinstance(value.get("mean"), Real):
                means[f"{prefix}{key}"] = float(value["mean"])
            elif isinstance(value, dict):
                walk(value, f"{prefix}{key}/")

    walk(summary.get("metrics", {}), "")
    for split, scores in summary.get("ensemble", {}).items():
        means |= _flat_numbers(scores, f"ensemble_{split}/")
    return means


def _params(config: Config) -> dict[str, str]:
    """The resolved config flattened to ``section.key`` params (values as MLflow's longest param allows)."""
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    flat: dict[str, str] = {}

    def walk(d: Any, prefix: str) -> None:
        if isinstance(d, dict) and d:
            for key, value in d.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix.rstrip(".")] = str(d)[:MAX_PARAM_VAL_LENGTH]

    walk(config.model_dump(mode="json"), "")
    return flat


def _key(name: str) -> str:
    """A metric name MLflow accepts: class names may hold characters its names may not."""
    return re.sub(r"[^\w\-. /:]", "_", name)
