"""Models: timm architectures with input normalisation, pretrained-weight resolution."""

from medclf.models.factory import (
    Classifier,
    InputNorm,
    build_model,
    count_parameters,
    model_from_spec,
)
from medclf.models.pretrained import WEIGHT_PACKAGES, resolve_pretrained_weights

__all__ = [
    "WEIGHT_PACKAGES",
    "Classifier",
    "InputNorm",
    "build_model",
    "count_parameters",
    "model_from_spec",
    "resolve_pretrained_weights",
]
