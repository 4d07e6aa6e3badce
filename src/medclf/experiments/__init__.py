"""Experiments: run a cross-validated study into a run folder; sweeps of studies compared on the same folds."""

from medclf.experiments.study import EVAL_SPLITS, run_study
from medclf.experiments.sweep import run_sweep
from medclf.experiments.sweep_config import load_sweep

__all__ = ["EVAL_SPLITS", "load_sweep", "run_study", "run_sweep"]
