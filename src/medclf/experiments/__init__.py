"""Experiments: run a cross-validated study into a run folder."""

from medclf.experiments.study import EVAL_SPLITS, run_study

__all__ = ["EVAL_SPLITS", "run_study"]
