"""A linear probe: logistic regression on a frozen backbone's pooled features, written into the model's own head.

The features are the input of the model's final linear layer (:func:`final_linear`), captured by a forward
pre-hook, so they are exactly what that layer sees whatever the architecture pools or normalises before it.
:func:`fit_linear_probe` fits scikit-learn's ``StandardScaler`` + ``LogisticRegressionCV`` (its C chosen by
inner stratified cross-validation on the given rows only, scored by log loss), and :func:`write_probe` folds
the scaler into the coefficients and copies them into that linear layer: the model then predicts what the
scikit-learn pipeline predicts, so the run folder, ``predict``, ensembles, export and serving need nothing new.
:func:`knn_probabilities` is the cheap cosine k-nearest-neighbour baseline beside it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from medclf.data.rows import Rows
from medclf.errors import ConfigError, DataError, ModelError
from medclf.training.device import Runtime
from medclf.training.loop import _to_input  # the loop imports this module lazily (probe stages)

__all__ = ["ProbeFit", "final_linear", "fit_linear_probe", "knn_probabilities", "pooled_features", "write_probe"]

MIN_STD = 1e-6  # a feature (nearly) constant on the training rows is not scaled up into noise
# The logit of a class absent from the training rows: its probability is 0 under softmax, even in fp16.
ABSENT_LOGIT = -1e4

# scikit-learn >= 1.8 warns unless the L2 penalty and the new C_ (a float) are asked for explicitly; older
# versions (the floor is 1.3) do not know these arguments.
_CV_PARAMS = inspect.signature(LogisticRegressionCV).parameters
_CV_EXTRA: dict[str, Any] = {}
if "use_legacy_attributes" in _CV_PARAMS:
    _CV_EXTRA = {"l1_ratios": (0.0,), "use_legacy_attributes": False}


@dataclass
class ProbeFit:
    """A fitted linear probe, in the units of the standardised features.

    Attributes:
        coef: (K, D) coefficients: one row for a two-class task (the second class's log-odds), one per class
            for three or more classes (multinomial), one per label for multi-label data.
        intercept: (K,) intercepts.
        C: the inverse regularisation chosen by inner cross-validation (one per label for multi-label data).
        mean: (D,) feature means on the training rows.
        std: (D,) feature standard deviations, clipped at :data:`MIN_STD`.
        train_log_loss: log loss on the training rows (the mean over labels for multi-label data).
        inner_folds: the inner folds C was chosen with (0: too few rows of a class, a plain fit at C=1).
        notes: what was done differently from the asked fit, and why (for the run's log).
        pipelines: the fitted scikit-learn pipelines (one; one per label for multi-label data).
    """

    coef: np.ndarray
    intercept: np.ndarray
    C: float | list[float]
    mean: np.ndarray
    std: np.ndarray
    train_log_loss: float
    inner_folds: int | list[int] = 0
    notes: list[str] = field(default_factory=list)
    pipelines: list[Pipeline] = field(default_factory=list, repr=False)


# ------------------------------------------------------------------------------------------ the model side
def final_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of the model's head: timm's classifier, a medclf Head's output layer, or a
    ``layers`` net's classifier.

    Raises:
        ConfigError: the head has hidden layers (a probe fits one linear layer) or no linear layer at all.
    """
    head = model.head_module() if hasattr(model, "head_module") else model
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    spec = getattr(model, "spec", {}) or {}
    if len(linears) > 1:
        where = ("model.head.hidden" if spec.get("head") else
                 f"model.name {spec.get('architecture', type(model).__name__)!r} (its classifier)")
        raise ConfigError(
            f"a linear probe fits the output layer on pooled features, but {where} puts {len(linears) - 1} "
            "hidden dense layer(s) between them. Set model.head.hidden: [] (a medclf head with only the output "
            "layer), or train with an sgd recipe."
        )
    if not linears:
        raise ConfigError(
            f"a linear probe needs a linear output layer, and the head of "
            f"{spec.get('architecture', type(model).__name__)!r} has none ({type(head).__name__}). Use "
            "model.head: {} (a medclf head ending in a linear layer), or train with an sgd recipe."
        )
    return linears[-1]


@torch.no_grad()
def pooled_features(model: nn.Module, images: torch.Tensor | Rows, *, batch_size: int, runtime: Runtime) -> np.ndarray:
    """The input of :func:`final_linear` for each image: (N, D) float32, in eval mode and full fp32.

    Args:
        model: a classifier taking float images in [0, 1], on ``runtime.device``; left in eval mode.
        images: (N, C, H, W) uint8 rows (a tensor or :class:`Rows`).
        batch_size: images per forward pass.
        runtime: the device (autocast is not used: the probe is fitted and checked on exact features).
    """
    linear = final_linear(model)
    captured: list[torch.Tensor] = []
    handle = linear.register_forward_pre_hook(lambda _module, args: captured.append(args[0].float().cpu()))
    model.eval()
    rows = Rows.of(images)
    try:
        for idx in torch.arange(len(rows)).split(batch_size):
            model(_to_input(rows.take(idx), runtime))  # as predict_proba feeds it
    finally:
        handle.remove()
    if not captured:
        return np.zeros((0, linear.in_features), dtype=np.float32)
    return torch.cat(captured).reshape(len(rows), -1).numpy().astype(np.float32, copy=False)


def write_probe(model: nn.Module, fit: ProbeFit, activation: str) -> None:
    """Fold the scaler into ``fit``'s coefficients and copy them into the model's final linear layer.

    ``softmax`` with three or more outputs takes the multinomial rows as they are; ``softmax`` with two outputs
    takes rows [-w/2, +w/2] and biases [-b/2, +b/2] (its softmax is then the probe's sigmoid); ``binary`` (one
    logit) and ``sigmoid`` (one logit per label) take the rows as they are.

    Raises:
        ConfigError: ``activation`` is one a logistic probe does not produce.
        ModelError: the fit's shape does not match the layer's.
    """
    linear = final_linear(model)
    weight = fit.coef / fit.std  # x_std = (x - mean) / std, so w . x_std + b = (w / std) . x + b - (w / std) . mean
    bias = fit.intercept - weight @ fit.mean
    if activation == "softmax" and linear.out_features == 2 and len(weight) == 1:
        weight, bias = np.concatenate([-weight / 2, weight / 2]), np.concatenate([-bias / 2, bias / 2])
    elif activation not in ("softmax", "binary", "sigmoid"):
        raise ConfigError(
            f"a linear probe writes logistic-regression logits, read through softmax, binary (one logit) or "
            f"sigmoid (multi-label); this model's outputs are read through {activation!r}. Use the loss "
            "cross_entropy (or bce on two classes or on multi-label data) with a probe recipe."
        )
    if weight.shape != tuple(linear.weight.shape):
        raise ModelError(
            f"the probe has {weight.shape[0]} output row(s) of {weight.shape[1]} features, but the model's final "
            f"linear layer is {linear.out_features} x {linear.in_features} ({activation}); the probe was fitted "
            "on another model's features or targets."
        )
    if linear.bias is None:
        raise ModelError("the model's final linear layer has no bias, so a logistic probe cannot be written into it.")
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor(bias, dtype=linear.bias.dtype))


# ----------------------------------------------------------------------------------------- the convex fit
def fit_linear_probe(
    features: np.ndarray, targets: np.ndarray, *, multilabel: bool, class_weight: Any, seed: int, cs: int = 10,
    inner_folds: int = 5, max_iter: int = 2000, n_classes: int | None = None,
) -> ProbeFit:
    """Standardise ``features`` and fit a logistic regression, its C chosen by inner stratified CV on these rows.

    Args:
        features: (N, D) pooled features of the training rows.
        targets: (N,) class indices, or (N, L) multi-hot labels when ``multilabel``.
        multilabel: one binary fit per label (column of ``targets``).
        class_weight: None, ``"balanced"``, or (single-label) one weight per class (a sequence, or a mapping
            from class index to weight).
        seed: seeds the inner folds' shuffle.
        cs: how many values of C (log-spaced from 1e-4 to 1e4) the inner CV tries.
        inner_folds: inner CV folds, fewer when a class has fewer rows (at least 2; with a class of one row,
            a plain fit at C=1, said in ``notes``).
        max_iter: L-BFGS iterations per fit.
        n_classes: classes of a single-label task (default: the largest index + 1); absent classes get
            zero weights and a logit of :data:`ABSENT_LOGIT`.

    Raises:
        DataError: fewer than two classes among the single-label targets.
        ConfigError: ``class_weight`` is of a kind the task cannot use.
    """
    x = np.asarray(features, dtype=np.float64)
    scaler = StandardScaler().fit(x)
    scaler.scale_ = np.maximum(scaler.scale_, MIN_STD)
    xs = scaler.transform(x)
    args = {"cs": cs, "inner_folds": inner_folds, "max_iter": max_iter, "seed": seed}
    if multilabel:
        if class_weight not in (None, "balanced"):
            raise ConfigError(
                f"a multi-label linear probe takes class_weight null or balanced (one binary fit per label), "
                f"not {class_weight!r}."
            )
        fits = [_fit_one(xs, np.asarray(targets)[:, j].astype(np.int64), class_weight, label=j, **args)
                for j in range(np.asarray(targets).shape[1])]
        coef = np.concatenate([f["coef"] for f in fits])
        intercept = np.concatenate([f["intercept"] for f in fits])
        c: float | list[float] = [f["C"] for f in fits]
        folds: int | list[int] = [f["folds"] for f in fits]
        loss = float(np.mean([f["loss"] for f in fits]))
        notes = [note for f in fits for note in f["notes"]]
        pipelines = [make_pipeline(scaler, f["estimator"]) for f in fits]
    else:
        y = np.asarray(targets).astype(np.int64)
        k = int(n_classes if n_classes is not None else y.max() + 1)
        one = _fit_one(xs, y, _class_weight(class_weight, k), label=None, **args)
        coef, intercept = _class_rows(one["coef"], one["intercept"], one["estimator"].classes_, k)
        c, folds, loss, notes = one["C"], one["folds"], one["loss"], one["notes"]
        pipelines = [make_pipeline(scaler, one["estimator"])]
    return ProbeFit(coef=coef, intercept=intercept, C=c, mean=scaler.mean_.copy(), std=scaler.scale_.copy(),
                    train_log_loss=loss, inner_folds=folds, notes=notes, pipelines=pipelines)


def _fit_one(xs: np.ndarray, y: np.ndarray, class_weight: Any, *, label: int | None, cs: int, inner_folds: int,
             max_iter: int, seed: int) -> dict[str, Any]:
    """One logistic regression on standardised features: CV over C when every class has two rows or more."""
    classes, counts = np.unique(y, return_counts=True)
    what = "the training rows" if label is None else f"label {label}"
    notes: list[str] = []
    if len(classes) < 2:
        if label is None:
            raise DataError(f"a linear probe needs two classes among the training rows; they are all class {classes}.")
        # a label that never (or always) occurs: a constant predictor at its clipped training rate
        rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        estimator = _constant(xs.shape[1], rate)
        notes.append(f"{what} is {'always' if rate > 0.5 else 'never'} positive; its probe is that constant rate.")
        # C = 0: the limit of infinite regularisation, where only the intercept remains
        return {"coef": estimator.coef_, "intercept": estimator.intercept_, "C": 0.0, "folds": 0,
                "loss": float(log_loss(y, estimator.predict_proba(xs), labels=[0, 1])), "notes": notes,
                "estimator": estimator}
    n_splits = min(inner_folds, int(counts.min()))
    if n_splits >= 2:
        if n_splits < inner_folds:
            notes.append(f"{what}: {n_splits} inner folds instead of {inner_folds} (a class has {counts.min()} rows).")
        estimator = LogisticRegressionCV(
            Cs=cs, cv=StratifiedKFold(n_splits, shuffle=True, random_state=seed), scoring="neg_log_loss",
            class_weight=class_weight, max_iter=max_iter, n_jobs=1, **_CV_EXTRA,
        ).fit(xs, y)
        chosen = float(np.ravel(estimator.C_)[0])
    else:
        n_splits, chosen = 0, 1.0
        notes.append(f"{what}: a class has a single row, so C is not cross-validated; a plain fit at C=1.")
        estimator = LogisticRegression(C=chosen, class_weight=class_weight, max_iter=max_iter).fit(xs, y)
    loss = float(log_loss(y, estimator.predict_proba(xs), labels=estimator.classes_))
    return {"coef": estimator.coef_, "intercept": estimator.intercept_, "C": chosen, "folds": n_splits,
            "loss": loss, "notes": notes, "estimator": estimator}


def _constant(n_features: int, rate: float) -> LogisticRegression:
    """A logistic regression predicting ``rate`` for every row (no fit: there is nothing to separate)."""
    estimator = LogisticRegression()
    estimator.classes_ = np.array([0, 1])
    estimator.coef_ = np.zeros((1, n_features))
    estimator.intercept_ = np.array([np.log(rate / (1 - rate))])
    estimator.n_features_in_ = n_features
    return estimator


def _class_weight(value: Any, n_classes: int) -> Any:
    """scikit-learn's class_weight from null, balanced, a per-class sequence or a {class index: weight} mapping."""
    if value is None or value == "balanced":
        return value
    if isinstance(value, Mapping):
        return {int(k): float(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == n_classes:
        return {i: float(v) for i, v in enumerate(value)}
    raise ConfigError(
        f"a linear probe's class_weight must be null, balanced, or one weight per class ({n_classes}); got {value!r}."
    )


def _class_rows(coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray,
                n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The fit's rows laid out for ``n_classes`` classes: as fitted when every class was present, else the
    present classes' multinomial rows (a binary fit's w as -w/2, +w/2) and the absent ones at ABSENT_LOGIT."""
    if len(classes) == n_classes:
        return coef, intercept
    if len(classes) == 2:  # binary fit among more classes: the equivalent two multinomial rows
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    full_coef = np.zeros((n_classes, coef.shape[1]))
    full_intercept = np.full(n_classes, ABSENT_LOGIT)
    full_coef[classes], full_intercept[classes] = coef, intercept
    return full_coef, full_intercept


# --------------------------------------------------------------------------------------------- kNN baseline
def knn_probabilities(train_f: np.ndarray, train_y: np.ndarray, query_f: np.ndarray, *, k: int,
                      n_classes: int) -> np.ndarray:
    """Class (or label) probabilities (M, n_classes) float64: the share of each among the ``k`` training rows
    nearest in cosine distance (brute force; fewer neighbours when there are fewer training rows).

    Args:
        train_f: (N, D) training features.
        train_y: (N,) class indices, or (N, L) multi-hot labels (then ``n_classes`` is L).
        query_f: (M, D) features to score.
    """
    y = np.asarray(train_y)
    onehot = np.eye(n_classes)[y.astype(np.int64)] if y.ndim == 1 else y.astype(np.float64)
    if len(query_f) == 0:
        return np.zeros((0, n_classes))
    neighbours = NearestNeighbors(n_neighbors=min(k, len(train_f)), metric="cosine", algorithm="brute")
    idx = neighbours.fit(np.asarray(train_f, dtype=np.float64)).kneighbors(
        np.asarray(query_f, dtype=np.float64), return_distance=False)
    return onehot[idx].mean(axis=1)
