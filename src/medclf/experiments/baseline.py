"""A study's baseline: a linear probe on the fold's frozen pretrained features, scored beside the model.

Fine-tuning a pretrained backbone on a small set can end below a logistic regression on that backbone's own
pooled features (issue 17). Each fold fits such a probe on its training rows and scores it with the model's
scoring on the same val, holdout and test images; the summary tests the paired fold differences.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from medclf.config import Config
from medclf.data import ImageSet
from medclf.data.rows import Rows
from medclf.data.splitting import Fold
from medclf.experiments.scoring import score_split
from medclf.experiments.summary import EVAL_SPLITS
from medclf.models import build_model
from medclf.training.device import Runtime
from medclf.training.feature_cache import cached_probe_features
from medclf.training.losses import n_outputs
from medclf.training.probe import ProbeFit, fit_linear_probe

__all__ = ["baseline_kind", "fold_baseline", "fold_model", "probe_probabilities"]


def baseline_kind(config: Config) -> str | None:
    """The baseline a study scores (``evaluation.baseline`` with ``auto`` resolved), or None for none.

    ``auto`` is the linear probe when the backbone is pretrained (random features make no baseline worth its
    feature pass) and no training stage is already a probe (the model would be its own baseline).
    """
    chosen = config.evaluation.baseline
    if chosen == "auto":
        probing = any(stage.kind == "probe" for stage in config.training.stages)
        return "linear_probe" if config.model.pretrained is not False and not probing else None
    return None if chosen == "none" else chosen


def fold_model(config: Config, data: ImageSet, fold: Fold) -> torch.nn.Module:
    """Fold ``fold``'s freshly built model: seeded by the fold, so a rebuild gives the same initial weights."""
    torch.manual_seed(config.seed + fold.index)  # same seed, same initial weights and dropout masks
    n_out = n_outputs(config.training.loss, n_classes=len(data.class_names), multilabel=data.multilabel)
    return build_model(config.model, in_chans=data.images.shape[1], n_classes=n_out, size_hw=data.images.shape[-2:])


def fold_baseline(config: Config, data: ImageSet, fold: Fold, runtime: Runtime) -> dict[str, Any] | None:
    """Fold ``fold``'s baseline entry of metrics.json, or None when the study has no baseline.

    A fresh model built like the fold's (same seed: the same pretrained backbone) gives the features, through the
    feature cache, so every fold after the first reads them; the probe is fitted on the fold's training rows.
    """
    if baseline_kind(config) is None:
        return None
    model = fold_model(config, data, fold).to(runtime.device)  # as fit_fold builds it: the same initial weights
    images = Rows(data.images)
    features = cached_probe_features(
        model, images, data_fingerprint=data.fingerprint, batch_size=config.training.eval_batch_size,
        runtime=lambda: runtime, cache_dir=config.data.cache_dir)
    start = time.perf_counter()
    with torch.inference_mode():  # the hook keeps the pooled features; no graph is needed behind them
        every = features("train", images)  # all rows at once: one cache entry, sliced per split below
    features_s = time.perf_counter() - start
    start = time.perf_counter()
    # training.loss.class_weights: balanced carries over; per-class weights are the loss's, not the probe's
    class_weight = "balanced" if config.training.loss.class_weights == "balanced" else None
    probe = config.training.probe
    fit = fit_linear_probe(every[fold.train], data.labels[fold.train], multilabel=data.multilabel,
                           class_weight=class_weight, seed=config.seed + fold.index, cs=probe.cs,
                           inner_folds=probe.inner_folds, max_iter=probe.max_iter, n_classes=len(data.class_names))
    fit_s = time.perf_counter() - start
    metrics: dict[str, Any] = {}
    thresholds = None  # multi-label: chosen on val as for the model (val is scored first)
    for split in EVAL_SPLITS:
        idx = fold.parts()[split]
        if len(idx) == 0:
            continue
        probs = probe_probabilities(fit, every[idx], n_classes=len(data.class_names), multilabel=data.multilabel)
        metrics[split], *_, thresholds = score_split(data, idx, probs, split=split, evaluation=config.evaluation,
                                                     thresholds=thresholds)
    return {"kind": "linear_probe", "C": fit.C, "fit_s": fit_s, "features_s": features_s, "metrics": metrics}


def probe_probabilities(fit: ProbeFit, features: np.ndarray, *, n_classes: int, multilabel: bool) -> np.ndarray:
    """(N, n_classes) probabilities of the fitted pipelines; a class absent from the training rows gets 0."""
    if multilabel:  # one binary pipeline per label; column 1 is the positive class (a constant one included)
        return np.column_stack([p.predict_proba(features)[:, 1] for p in fit.pipelines])
    pipeline = fit.pipelines[0]
    probs = np.zeros((len(features), n_classes))
    probs[:, pipeline.classes_] = pipeline.predict_proba(features)
    return probs
