"""Training: the fit loop, callbacks, losses, optimizers, schedulers, device handling."""

from medclf.training.callbacks import BestWeights, Callback, HistoryCSV, RichProgress
from medclf.training.device import Runtime, resolve_runtime
from medclf.training.loop import TTA_FLIPS, FitResult, Trainer, batch_indices, predict_proba, tta_probabilities

__all__ = [
    "TTA_FLIPS",
    "BestWeights",
    "Callback",
    "FitResult",
    "HistoryCSV",
    "RichProgress",
    "Runtime",
    "Trainer",
    "batch_indices",
    "predict_proba",
    "resolve_runtime",
    "tta_probabilities",
]
