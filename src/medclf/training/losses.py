"""Loss functions, registered under the names written in ``training.loss.name``.

Each loss is one :class:`LossInfo` entry of :data:`LOSSES` (as timm's ``OptimInfo`` keeps an optimizer's facts):
the ``training.loss`` keys it reads, how many logits the model needs, the activation that turns those logits
into the probabilities metrics are computed from (stored in ``model.json``), and how to build the loss function.
:func:`build_loss` makes an :class:`Objective` from the entry: it takes the model's logits and the targets as
the data gives them (class indices (N,) for single-label data, multi-hot floats (N, L) for multi-label data).
Class weights, focal alpha and BCE pos_weight given as ``balanced`` are computed from the training fold's
labels (scikit-learn's ``n_samples / (n_classes * count)``), never from validation or test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from medclf.config import LossConfig
from medclf.errors import ConfigError
from medclf.registry import Registry

__all__ = ["LOSSES", "OUTPUT_ACTIVATIONS", "LossInfo", "Objective", "build_loss", "loss_keys", "n_outputs",
           "probabilities"]


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


# logits -> probabilities, by the name model.json stores as "activation" (not the layer activations of
# medclf.models.layers.ACTIVATIONS, which are modules inside a network)
OUTPUT_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": _softmax,
    "binary": _binary,
    "sigmoid": _sigmoid,
    "poisson": _poisson,
    "normalised_sigmoid": _normalised_sigmoid,
}


def probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Class (or label) probabilities from logits by the named activation (stored in ``model.json``)."""
    return OUTPUT_ACTIVATIONS[activation](logits.float())


class Objective(nn.Module):
    """A loss plus the activation that turns the same logits into probabilities.

    Attributes:
        n_outputs: logits the model must produce.
        activation: the key of :data:`OUTPUT_ACTIVATIONS` used at prediction time.
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
LossFn = Callable[[Objective, torch.Tensor, torch.Tensor], torch.Tensor]
Buffers = dict[str, torch.Tensor | None]
LossBuilder = Callable[..., tuple[LossFn, Buffers]]


def _one_per_class(n_classes: int, multilabel: bool) -> int:
    return n_classes


@dataclass(frozen=True)
class LossInfo:
    """Everything medclf knows about one loss, on its registry entry (timm's ``OptimInfo``).

    The config check of unread keys, the model's output count, :func:`build_loss` and the ``activation`` saved
    in ``model.json`` all read this entry; no other module keeps a fact about a loss.

    Attributes:
        name: the name written in ``training.loss.name``.
        build: ``(cfg, *, names, counts, n, multilabel, n_outputs) -> (loss function, buffers)``; ``counts`` are
            the training fold's images per class (per label), ``n`` its size. A None buffer is left out.
        keys: the ``training.loss`` keys the loss reads; the config refuses another key set to a non-default value.
        activation: ``(n_outputs, multilabel) ->`` the :data:`OUTPUT_ACTIVATIONS` name that turns its logits
            into probabilities.
        outputs: ``(n_classes, multilabel) ->`` logits the model must produce (default: one per class).
    """

    name: str
    build: LossBuilder
    keys: frozenset[str]
    activation: Callable[[int, bool], str]
    outputs: Callable[[int, bool], int] = _one_per_class


LOSSES: Registry[LossInfo] = Registry("loss")


def _register(info: LossInfo) -> LossInfo:
    return LOSSES.register(info.name)(info)


def _cross_entropy(cfg: LossConfig, *, names: Sequence[str], counts: np.ndarray, n: int, multilabel: bool,
                   n_outputs: int) -> tuple[LossFn, Buffers]:
    """Softmax cross-entropy, with class weights and label smoothing (on multi-label data: sigmoid BCE, as ``bce``)."""
    if multilabel:
        return _bce(cfg, names=names, counts=counts, n=n, multilabel=True, n_outputs=n_outputs)
    weight = _per_class(cfg.class_weights, key="training.loss.class_weights", names=names, counts=counts)

    def fn(self: Objective, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # class indices (N,), or class probabilities (N, K) from training.mixup (smoothed here all the same)
        target = target if target.dim() == 2 else target.long()
        return F.cross_entropy(logits, target, weight=getattr(self, "weight", None),
                               label_smoothing=cfg.label_smoothing)

    return fn, {"weight": weight}


def _focal(cfg: LossConfig, *, names: Sequence[str], counts: np.ndarray, n: int, multilabel: bool,
           n_outputs: int) -> tuple[LossFn, Buffers]:
    """Focal loss (Lin et al. 2017): ``-alpha_t (1 - p_t)^gamma log p_t``, softmax or per-label sigmoid.

    ``alpha`` weights classes: per class, or a single number, which (as in Lin et al. and torchvision) is the
    positive class's weight with ``1 - alpha`` for the negative one: the positive class of a two-class task
    (always the second class; ``data.positive_class``), every label's positives on multi-label data.
    ``class_weights`` multiplies in as for cross-entropy; ``label_smoothing`` softens the targets as it does
    for cross-entropy (softmax) and BCE (sigmoid).
    """
    if isinstance(cfg.alpha, (int, float)) and not multilabel:
        if len(names) != 2:
            raise ConfigError(
                f"training.loss.alpha: a single number ({cfg.alpha}) weights the positive class of a two-class "
                f"task (data.positive_class); with {len(names)} classes give one value per class (a list, a "
                "{class: value} mapping) or balanced."
            )
        alpha = torch.tensor([1.0 - cfg.alpha, float(cfg.alpha)])
    else:
        alpha = _per_class(cfg.alpha, key="training.loss.alpha", names=names, counts=counts)
    weight = _per_class(cfg.class_weights, key="training.loss.class_weights", names=names, counts=counts)
    gamma, smoothing = cfg.gamma, cfg.label_smoothing
    buffers = {"alpha": alpha, "weight": weight}

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

        return fn, buffers

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

    return fn, buffers


def _bce(cfg: LossConfig, *, names: Sequence[str], counts: np.ndarray, n: int, multilabel: bool,
         n_outputs: int) -> tuple[LossFn, Buffers]:
    """Binary cross-entropy with logits: one sigmoid per label, or one logit for a two-class task.

    Single-label data with more than two classes is trained one-vs-rest (one-hot targets). ``pos_weight``
    weights the positive targets of each output (``balanced``: negatives / positives in the training fold); the
    one output of a two-class task is its positive class (the second class; ``data.positive_class``);
    ``class_weights`` weights each label's term (multi-label) or each image by its class (single-label).
    """
    out_counts = counts[1:] if n_outputs == 1 else counts
    if cfg.pos_weight == "balanced":
        pos_weight = _balanced_pos_weight(out_counts, n)
    elif cfg.pos_weight is None:
        pos_weight = None
    elif n_outputs == 1:
        pos_weight = _one_logit_pos_weight(cfg.pos_weight, names=names)
    else:
        pos_weight = _per_class(cfg.pos_weight, key="training.loss.pos_weight", names=names, counts=out_counts)
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

    return fn, {"pos_weight": pos_weight, "weight": weight}


def _one_logit_pos_weight(value: Any, *, names: Sequence[str]) -> torch.Tensor:
    """The one-logit head's ``pos_weight`` (a number, a one-value list or ``{positive class: number}``): the
    weight of the positive class's images, named in the error when the value does not fit."""
    positive, negative = names[1], names[0]
    if isinstance(value, (int, float)):
        return torch.tensor([float(value)])
    if isinstance(value, dict) and set(value) <= {positive}:
        return torch.tensor([float(value.get(positive, 1.0))])
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return torch.tensor([float(value[0])])
    raise ConfigError(
        f"training.loss.pos_weight: a two-class task trained with bce has one output, the positive class "
        f"({positive!r}, data.positive_class), and pos_weight weights its images against the {negative!r} ones; "
        f"give one number, balanced or {{{positive}: number}}, not {value!r}."
    )


def _poisson(cfg: LossConfig, *, names: Sequence[str], counts: np.ndarray, n: int, multilabel: bool,
             n_outputs: int) -> tuple[LossFn, Buffers]:
    """Poisson negative log-likelihood of the targets as counts, the logits being log-rates.

    Takes no weighting or smoothing keys (the default ``label_smoothing`` does not apply). Multi-label
    probabilities are P(count >= 1) = 1 - exp(-rate); single-label ones are the normalised rates (the softmax of
    the log-rates).
    """

    def fn(self: Objective, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.poisson_nll_loss(logits, _float_targets(target, self.n_outputs), log_input=True)

    return fn, {}


def _bce_outputs(n_classes: int, multilabel: bool) -> int:
    """One logit for a two-class single-label task (its sigmoid is the second class's probability)."""
    return 1 if (not multilabel and n_classes == 2) else n_classes


def _bce_activation(n_outputs: int, multilabel: bool) -> str:
    if multilabel:
        return "sigmoid"
    return "binary" if n_outputs == 1 else "normalised_sigmoid"


_register(LossInfo(
    "cross_entropy", _cross_entropy, frozenset({"label_smoothing", "class_weights"}),
    activation=lambda n_outputs, multilabel: "sigmoid" if multilabel else "softmax",
))
_register(LossInfo(
    "focal", _focal, frozenset({"label_smoothing", "class_weights", "alpha", "gamma"}),
    activation=lambda n_outputs, multilabel: "sigmoid" if multilabel else "softmax",
))
_register(LossInfo(
    "bce", _bce, frozenset({"label_smoothing", "class_weights", "pos_weight"}),
    activation=_bce_activation, outputs=_bce_outputs,
))
_register(LossInfo(
    "poisson", _poisson, frozenset(),
    activation=lambda n_outputs, multilabel: "poisson" if multilabel else "softmax",
))


# ---------------------------------------------------------------------------------------------- public API
def loss_keys(name: str) -> frozenset[str]:
    """The ``training.loss`` keys the loss ``name`` reads (for the config's check of keys set but unread).

    Raises:
        ConfigError: ``name`` is not a registered loss (listing the registered names).
    """
    return LOSSES.get(name).keys


def n_outputs(cfg: LossConfig, *, n_classes: int, multilabel: bool = False) -> int:
    """How many logits the model needs for this loss (its entry's rule: 1 for a two-class bce head)."""
    return LOSSES.get(cfg.name).outputs(n_classes, multilabel)


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
    info = LOSSES.get(cfg.name)
    targets = np.asarray(train_targets)
    if multilabel:
        counts = targets.reshape(len(targets), -1).sum(axis=0).astype(np.int64)
    else:
        counts = np.bincount(targets.astype(np.int64), minlength=len(class_names))
    n_out = info.outputs(len(class_names), multilabel)
    fn, buffers = info.build(cfg, names=list(class_names), counts=counts, n=len(targets), multilabel=multilabel,
                             n_outputs=n_out)
    return Objective(fn, n_outputs=n_out, activation=info.activation(n_out, multilabel),
                     buffers={k: v for k, v in buffers.items() if v is not None})
