"""Experiments: run a cross-validated study into a run folder; sweeps of studies compared on the same folds."""

from medclf.experiments.study import EVAL_SPLITS, run_study
from medclf.experiments.sweep import run_sweep
from medclf.experiments.sweep_config import load_sweep
from medclf.experiments.validation import check_config, load_checked_config, parse_checked_config

__all__ = ["EVAL_SPLITS", "check_config", "load_checked_config", "load_sweep", "parse_checked_config", "run_study",
           "run_sweep"]
