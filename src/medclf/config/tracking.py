"""Experiment tracking: TensorBoard event files and MLflow runs, written beside the run folder's own files.

Every key here is a runtime key (:data:`medclf.config.RUNTIME_ONLY_KEYS`): switching tracking on or off does not
change what a study computes, so a run folder started without tracking resumes with it.
"""

from __future__ import annotations

from medclf.config._base import _Section

__all__ = ["TrackingConfig"]


class TrackingConfig(_Section):
    """Where a study's parameters, per-epoch metrics, summary and report are also logged."""

    tensorboard: bool = False  # event files under RUN_DIR/tensorboard/fold-<k> (and tensorboard/summary)
    mlflow: bool = False  # one MLflow run per study, a nested run per fold
    # null: sqlite:///<working directory>/mlruns/mlflow.db, artifacts in mlruns/artifacts (MLflow's file store
    # refuses to start unless told to, so the local default is its database backend in a mlruns/ folder)
    mlflow_uri: str | None = None
    experiment: str | None = None  # the MLflow experiment; null: the config's name
