"""Inference: predict new images with a finished run's fold ensemble, explain them, export the ensemble to ONNX."""

from medclf.inference.explain import explain_images
from medclf.inference.export import OnnxModel, export_onnx
from medclf.inference.predict import ensemble_proba, fold_models, load_fold_models, predict_images, predict_inputs

__all__ = ["OnnxModel", "ensemble_proba", "explain_images", "export_onnx", "fold_models", "load_fold_models",
           "predict_images", "predict_inputs"]
