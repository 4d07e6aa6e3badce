"""Loss functions, registered under the names written in ``training.loss.name``.

Every loss is an :class:`Objective`: it takes the model's logits and the targets as the data gives them
(class indices (N,) for single-label data, multi-hot floats (N, L) for multi-label data), and it knows how
many outputs the model needs and how to turn logits into the probabilities that metrics are computed from.
Class weights, focal alpha and BCE pos_weight given as ``balanced`` are computed from the training fold's
labels (scikit-learn's ``n_samples / (n_classes * count)``), never from validation or test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from medclf.config import LossConfig
from medclf.errors import ConfigError
from medclf.registry import Registry

__all__ = ["ACTIVATIONS", "LOSSES", "LOSS_KEYS", "Objective", "build_loss", "n_outputs", "probabilities"]


# -------------------------------------------------------------------------------- logits -> probabilities
def _softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=1)


def _binary(logits: torch.Tensor) -> torch.Tensor:
    """One logit per image -> (1 - p, p) for the two classes."""
    p = torch.sigmoid(logits[:, :1])
    return torch.cat([1 - p, p], dim=1)


def _sigmoid(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits)


def _poisson(logits: torch.Tensor) -> torch.Tensor:
    """Log-rates -> P(count >= 1) = 1 - exp(-rate) per label."""
    return -torch.expm1(-torch.exp(logits.clamp(max=30)))


def _normalised_sigmoid(logits: torch.Tensor) -> torch.Tensor:
    """One-vs-rest sigmoids of a single-label task, rescaled to sum to one per image."""
    p = torch.sigmoid(logits)
    return p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": _softmax,
    "binary": _binary,
    "sigmoid": _sigmoid,
    "poisson": _poisson,
    "normalised_sigmoid": _normalised_sigmoid,
}


def probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Class (or label) probabilities from logits by the named activation (stored in ``model.json``)."""
    return ACTIVATIONS[activation](logits.float())


class Objective(nn.Module):
    """A loss plus the activation that turns the same logits into probabilities.

    Attributes:
        n_outputs: logits the model must produce.
        activation: the key of :data:`ACTIVATIONS` used at prediction time.
    """

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, n_outputs: int,
                 activation: str, buffers: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.fn, self.n_outputs, self.activation = fn, n_outputs, activation
        for name, value in (buffers or {}).items():
            self.register_buffer(name, value)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(self, logits.float(), target)


# ------------------------------------------------------------------------------------------- per-class values
def _per_class(value: Any, *, key: str, names: Sequence[str], counts: np.ndarray) -> torch.Tensor | None:
    """A per-class vector from null, a scalar, ``balanced``, a list, or a ``{class: value}`` mapping."""
    if value is None:
        return None
    if value == "balanced":
        if (counts == 0).any():
            missing = [n for n, c in zip(names, counts) if c == 0]
            raise ConfigError(f"{key}: balanced weights need every class in the training fold; {missing} have none.")
        # compute_class_weight on the counts: n_samples / (n_classes * count)
        labels = np.repeat(np.arange(len(names)), counts)
        return torch.tensor(compute_class_weight("balanced", classes=np.arange(len(names)), y=labels),
                            dtype=torch.float32)
    if isinstance(value, (int, float)):
        return torch.full((len(names),), float(value))
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ConfigError(f"{key} names {unknown}, which are not classes; the classes are {list(names)}.")
        return torch.tensor([float(value.get(n, 1.0)) for n in names])
    if len(value) != len(names):
        raise ConfigError(f"{key} has {len(value)} values but there are {len(names)} classes ({list(names)}).")
    return torch.tensor([float(v) for v in value])


def _balanced_pos_weight(counts: np.ndarray, n: int) -> torch.Tensor:
    """negatives / positives per output (PyTorch's recipe for BCE ``pos_weight``)."""
    pos = np.maximum(counts, 1)
    return torch.tensor((n - counts) / pos, dtype=torch.float32)


def _float_targets(target: torch.Tensor, n_outputs: int) -> torch.Tensor:
    """Class indices -> one-hot (or a single 0/1 column for a one-logit head); multi-hot passes through."""
    if target.dim() == 2:
        return target.float()
    if n_outputs == 1:
        return target.float().unsqueeze(1)
    return F.one_hot(target.long(), n_outputs).float()


# ------------------------------------------------------------------------------------------------ registry
LossFactory = Callable[..., Objective]
LOSSES: Registry[LossFactory] = Registry("loss")

# The training.loss keys each loss reads; the config refuses a key set for a loss that would ignore it.
LOSS_KEYS: dict[str, frozenset[str]] = {
    "cross_entropy": frozenset({"label_smoothing", "class_weights"}),
    "focal": frozenset({"label_smoothing", "class_weights", "alpha", "gamma"}),
    "bce": frozenset({"label_smoothing", "class_weights", "pos_weight"}),
    "poisson": frozenset(),
}


@LOSSES.register("cross_entropy")
def cross_entropy(cfg: LossConfig, *, names: Sequence[str], counts: np.ndarray, n: int, multilabel: bool) -> Objective:
    """Softmax cross-entropy, with class weights and label smoothing (on multi-label data: sigmoid BCE, as ``bce``)."""
    if multilabel:
        return bce(cfg, names=names, counts=counts, n=n, multilabel=True)
    weight = _per_class(cfg.class_weights, key="training.loss.class_weights", names=names, counts=counts)

    def fn(self: Objective, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target.long(), weight=getattr(self, "weight", None),
                               label_smoothing=cfg.label_smoothing)

    return Objective(fn, n_outputs=len(names), activation="softmax",
                     buffers={} if weight is None else {"weight": weight})


@LOSSES.register("focal")
def focal(cfg: LossConfig, *, names: Sequence[str], counts: np.ndarray, n: int, multilabel: bool) -> Objective:
    """Focal loss (Lin et al. 2017): ``-alpha_t (1 - p_t)^gamma log p_t``, softmax or per-label sigmoid.

    ``alpha`` weights classes: per class, or a single number, which (as in Lin et al. and torchvision) is the
    positive class's weight with ``1 - alpha`` for the negative one: class 1 of a two-class task, every label's
    positives on multi-label data. ``class_weights`` multiplies in as for cross-entropy; ``label_smoothing``
    softens the targets as it does for cross-entropy (softmax) and BCE (sigmoid).
    """
    if isinstance(cfg.alpha, (int, float)) and not multilabel:
        if len(names) != 2:
            raise ConfigError(
                f"training.loss.alpha: a single number ({cfg.alpha}) weights the positive class of a two-class "
                f"task; with {len(names)} classes give one value per class (a list, a {{class: value}} mapping) "
                "or balanced."
            )
        alpha = torch.tensor([1.0 - cfg.alpha, float(cfg.alpha)])
    else:
        alpha = _per_class(cfg.alpha, key="training.loss.alpha", names=names, counts=counts)
    weight = _per_class(cfg.class_weights, key="training.loss.class_weights", names=names, counts=counts)
    gamma, smoothing = cfg.gamma, cfg.label_smoothing
    buffers = {k: v for k, v in (("alpha", alpha), ("weight", weight)) if v is not None}

    if multilabel:
        def fn(self: Objective, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            t = target.float()
            if smoothing:
                t = t * (1 - smoothing) + smoothing / 2
            p = torch.sigmoid(logits)
            p_t = p * t + (1 - p) * (1 - t)
            loss = (1 - p_t) ** gamma * F.binary_cross_entropy_with_logits(logits, t, reduction="none")
            if hasattr(self, "alpha"):
                loss = loss * (self.alpha * t + (1 - self.alpha) * (1 - t))
            if hasattr(self, "weight"):
                loss = loss * self.weight  # per label
            return loss.mean()

        return Objective(fn, n_outputs=len(names), activation="sigmoid", buffers=buffers)

    def fn(self: Objective, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: F811
        # sum over classes of w_c * t_c * (1 - p_c)^gamma * -log p_c: with hard targets (no smoothing) this is
        # the familiar -w_y (1 - p_y)^gamma log p_y; smoothing spreads epsilon over every class as F.cross_entropy does
        log_p = F.log_softmax(logits, dim=1)
        t = F.one_hot(target.long(), logits.shape[1]).float()
        if smoothing:
            t = t * (1 - smoothing) + smoothing / logits.shape[1]
        per_class = -t * (1 - log_p.exp()) ** gamma * log_p
        for name in ("alpha", "weight"):
            if hasattr(self, name):
                per_class = per_class * getattr(self, name)
        return per_class.sum(dim=1).mean()

    return Objective(fn, n_outputs=len(names), activation="softmax", buffers=buffers)


@LOSSES.register("bce")
def bce(cfg: LossConfig, *, names: Sequence[str], counts: np.ndarray, n: int, multilabel: bool) -> Objective:
    """Binary cross-entropy with logits: one sigmoid per label, or one logit for a two-class task.

    Single-label data with more than two classes is trained one-vs-rest (one-hot targets). ``pos_weight``
    weights the positive targets of each output (``balanced``: negatives / positives in the training fold);
    ``class_weights`` weights each label's term (multi-label) or each image by its class (single-label).
    """
    n_out = n_outputs(cfg, n_classes=len(names), multilabel=multilabel)
    out_counts = counts[1:] if n_out == 1 else counts
    if cfg.pos_weight == "balanced":
        pos_weight = _balanced_pos_weight(out_counts, n)
    elif cfg.pos_weight is None:
        pos_weight = None
    else:
        out_names = names[1:] if n_out == 1 else names
        pos_weight = _per_class(cfg.pos_weight, key="training.loss.pos_weight", names=out_names, counts=out_counts)
    weight = _per_class(cfg.class_weights, key="training.loss.class_weights", names=names, counts=counts)
    smoothing = cfg.label_smoothing

    def fn(self: Objective, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = _float_targets(target, self.n_outputs)
        if smoothing:
            t = t * (1 - smoothing) + smoothing / 2
        w = getattr(self, "weight", None)
        if w is not None and target.dim() == 1:
            w = w[target.long()].unsqueeze(1)  # single-label: each image weighted by its class
        return F.binary_cross_entropy_with_logits(logits, t, weight=w, pos_weight=getattr(self, "pos_weight", None))

    activation = "sigmoid" if multilabel else ("binary" if n_out == 1 else "normalised_sigmoid")
    buffers = {k: v for k, v in (("pos_weight", pos_weight), ("weight", weight)) if v is not None}
    return Objective(fn, n_outputs=n_out, activation=activation, buffers=buffers)


@LOSSES.register("poisson")
def poisson(cfg: LossConfig, *, names: Sequence[str], counts: np.ndarray, n: int, multilabel: bool) -> Objective:
    """Poisson negative log-likelihood of the targets as counts, the logits being log-rates.

    Takes no weighting or smoothing keys (the default ``label_smoothing`` does not apply). Multi-label
    probabilities are P(count >= 1) = 1 - exp(-rate); single-label ones are the normalised rates (the softmax of
    the log-rates).
    """

    def fn(self: Objective, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.poisson_nll_loss(logits, _float_targets(target, self.n_outputs), log_input=True)

    return Objective(fn, n_outputs=len(names), activation="poisson" if multilabel else "softmax")


def build_loss(
    cfg: LossConfig, *, class_names: Sequence[str], train_targets: np.ndarray, multilabel: bool = False
) -> Objective:
    """The configured loss, with any ``balanced`` weights computed from ``train_targets`` (the training fold).

    Args:
        cfg: the ``training.loss`` section.
        class_names: the classes (or labels), in output order.
        train_targets: the training fold's class indices (N,) or multi-hot targets (N, L).
        multilabel: the task has several labels per image.
    """
    targets = np.asarray(train_targets)
    if multilabel:
        counts = targets.reshape(len(targets), -1).sum(axis=0).astype(np.int64)
    else:
        counts = np.bincount(targets.astype(np.int64), minlength=len(class_names))
    return LOSSES.get(cfg.name)(cfg, names=list(class_names), counts=counts, n=len(targets), multilabel=multilabel)


def n_outputs(cfg: LossConfig, *, n_classes: int, multilabel: bool = False) -> int:
    """How many logits the model needs for this loss (1 for a two-class bce head)."""
    return 1 if (cfg.name == "bce" and not multilabel and n_classes == 2) else n_classes
