"""One augmented training batch, as the model sees it: the check to run before a long study.

``medclf show-batch`` draws the batch that the first fold's training would start from (the same
oversampling plan and augmentation, the same seed) as a labelled grid PNG.
"""

from __future__ import annotations

import numpy as np
import torch

from medclf.config import Config
from medclf.data import load_dataset
from medclf.data.rows import Rows
from medclf.data.splitting import make_folds
from medclf.training.loop import augment_batch, training_augmentations
from medclf.training.sampling import training_plan

__all__ = ["augmented_batch"]


def augmented_batch(config: Config, *, n_images: int | None = None) -> tuple[np.ndarray, list[str], list[bool]]:
    """The first training batch of fold 0: uint8 images (N, C, H, W), their labels, and copy flags.

    Args:
        config: the study's config; its data, cv, oversample and augmentation settings are used.
        n_images: images to draw (default: ``training.batch_size``, at most 64).

    Returns:
        The images; each image's class name (multi-label: its positive labels joined by ``+``, or ``none``);
        whether each image is an oversampled copy.
    """
    data = load_dataset(config.data)
    fold = make_folds(data, config.cv, seed=config.seed)[0]
    train = config.training
    generator = torch.Generator().manual_seed(config.seed)
    labels = data.labels[fold.train]
    order, is_copy = training_plan(labels, train.oversample, multilabel=data.multilabel, generator=generator)
    n = min(n_images or train.batch_size, 64, len(order))
    order, is_copy = order[:n], is_copy[:n]
    x = Rows(data.images, index=fold.train).take(order)
    augment = training_augmentations(train, size_hw=tuple(x.shape[-2:]), channels=int(x.shape[1]))
    x = augment_batch(x, is_copy, augment, generator)
    return x.numpy(), [_label_text(row, data.class_names) for row in labels[order.numpy()]], is_copy.tolist()


def _label_text(label: np.ndarray, class_names: list[str]) -> str:
    """A class index's name, or a multi-hot row's positive labels joined by ``+``."""
    if np.ndim(label) == 0:
        return class_names[int(label)]
    positives = [name for name, on in zip(class_names, label) if on > 0.5]
    return "+".join(positives) or "none"
