"""Which training images an epoch visits: every image once, or a class-balanced resample of the training fold.

``oversample`` modes (``training.oversample``):

- ``none``: every image once, shuffled.
- ``duplicate``: each smaller class is topped up to the largest class's count with exact copies of its images
  (whole repeats, then a random subset), drawn afresh each epoch.
- ``augment``: the same copies, flagged so that the loop passes them through the augmentation.
- ``weighted_sampler``: ``n`` draws with replacement, each image weighted by 1 / its class count, so every class
  is expected equally often (PyTorch's ``WeightedRandomSampler`` recipe).

Only the training fold is ever resampled; validation and test images are scored once each. Multi-label data is
never resampled (its plan is a plain shuffle). :func:`training_plan` is the plan of one epoch as the trainer
draws it, and as ``medclf show-batch`` shows it.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["OVERSAMPLE_MODES", "epoch_plan", "plan_labels", "plan_size", "training_plan"]

OVERSAMPLE_MODES = ("none", "duplicate", "augment", "weighted_sampler")


def epoch_plan(
    labels: np.ndarray, mode: str, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into the training fold for one epoch, shuffled, and a mask of which entries are added copies.

    Args:
        labels: class indices of the training fold (N,).
        mode: one of :data:`OVERSAMPLE_MODES`.
        generator: the source of randomness (the same generator state gives the same plan).
    """
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    n = len(labels)
    if mode == "none" or n == 0:
        order = torch.randperm(n, generator=generator)
        return order, torch.zeros(n, dtype=torch.bool)
    counts = torch.bincount(labels)
    if mode == "weighted_sampler":
        weights = 1.0 / counts[labels].double()
        order = torch.multinomial(weights, n, replacement=True, generator=generator)
        return order, torch.zeros(n, dtype=torch.bool)
    if mode not in ("duplicate", "augment"):
        raise ValueError(f"unknown oversample mode {mode!r}; expected one of {OVERSAMPLE_MODES}")
    target = int(counts.max())
    extra = []
    for c, count in enumerate(counts.tolist()):
        if count == 0 or count == target:
            continue
        members = torch.nonzero(labels == c).flatten()
        need = target - count
        repeats, rest = divmod(need, count)
        picks = [members.repeat(repeats)] if repeats else []
        picks.append(members[torch.randperm(count, generator=generator)[:rest]])
        extra.append(torch.cat(picks))
    copies = torch.cat(extra) if extra else torch.zeros(0, dtype=torch.long)
    index = torch.cat([torch.arange(n), copies])
    is_copy = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(len(copies), dtype=torch.bool)])
    order = torch.randperm(len(index), generator=generator)
    return index[order], is_copy[order]


def plan_size(labels: np.ndarray, mode: str) -> int:
    """How many images an epoch of :func:`epoch_plan` visits."""
    labels = np.asarray(labels, dtype=np.int64)
    if mode in ("duplicate", "augment") and len(labels):
        counts = np.bincount(labels)
        return int(counts.max()) * int((counts > 0).sum())
    return len(labels)


def plan_labels(targets: np.ndarray, *, multilabel: bool) -> np.ndarray:
    """The labels a plan balances: the class indices (N,); multi-label rows all count as one class (no resampling)."""
    targets = np.asarray(targets)
    return np.zeros(len(targets), dtype=np.int64) if multilabel else targets


def training_plan(
    targets: np.ndarray, mode: str, *, multilabel: bool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training epoch's plan, as the trainer draws it: :func:`epoch_plan` of :func:`plan_labels`.

    Args:
        targets: the training fold's class indices (N,) or multi-hot rows (N, L).
        mode: ``training.oversample``.
        multilabel: ``targets`` are multi-hot rows.
        generator: the trainer's generator (seeded with the fold's seed; the first plan is its first draw).

    Returns:
        Indices into the training fold in visiting order, and a mask of the added copies.
    """
    return epoch_plan(plan_labels(targets, multilabel=multilabel), mode, generator=generator)
