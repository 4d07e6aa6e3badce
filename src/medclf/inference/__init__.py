"""Inference: predict new images with a finished run's fold ensemble."""

from medclf.inference.predict import load_fold_models, predict_images

__all__ = ["load_fold_models", "predict_images"]
