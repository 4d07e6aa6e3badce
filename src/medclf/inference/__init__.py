"""Inference: predict new images with a finished run's fold ensemble."""

from medclf.inference.predict import ensemble_proba, fold_models, load_fold_models, predict_images

__all__ = ["ensemble_proba", "fold_models", "load_fold_models", "predict_images"]
