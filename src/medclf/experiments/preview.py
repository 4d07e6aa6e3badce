"""One augmented training batch, as the model sees it: the check to run before a long study.

``medclf show-batch`` draws the batch that the first fold's training would start from (the same
oversampling plan and augmentation, the same seed) as a labelled grid PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medclf.atomic import atomic_write_bytes
from medclf.config import Config
from medclf.data import load_dataset
from medclf.data.augmentation import build_augmentation
from medclf.data.splitting import make_folds
from medclf.training.sampling import epoch_plan

__all__ = ["augmented_batch", "save_batch_grid"]


def augmented_batch(config: Config, *, n_images: int | None = None) -> tuple[np.ndarray, list[str], list[bool]]:
    """The first training batch of fold 0: uint8 images (N, C, H, W), their class names, and copy flags.

    Args:
        config: the study's config; its data, cv, oversample and augmentation settings are used.
        n_images: images to draw (default: ``training.batch_size``, at most 64).
    """
    data = load_dataset(config.data)
    fold = make_folds(data, config.cv, seed=config.seed)[0]
    train = config.training
    generator = torch.Generator().manual_seed(config.seed)
    labels = data.labels[fold.train]
    order, is_copy = epoch_plan(labels, train.oversample, generator=generator)
    n = min(n_images or train.batch_size, 64, len(order))
    order, is_copy = order[:n], is_copy[:n]
    x = torch.from_numpy(data.images[fold.train][order.numpy()])
    shape = {"size_hw": tuple(x.shape[-2:]), "channels": int(x.shape[1])}
    aug = train.augmentation
    augment = build_augmentation(aug.presets, aug.params, aug.transforms, **shape)
    copy_augment = (augment or build_augmentation(["basic"], **shape)) if train.oversample == "augment" else None
    if augment is not None:
        x[~is_copy] = augment(x[~is_copy], generator)
    if copy_augment is not None and bool(is_copy.any()):
        x[is_copy] = copy_augment(x[is_copy], generator)
    names = [data.class_names[int(c)] for c in labels[order.numpy()]]
    return x.numpy(), names, is_copy.tolist()


def save_batch_grid(images: np.ndarray, titles: list[str], path: Path, *, columns: int = 8) -> Path:
    """A grid of uint8 images (N, C, H, W) with a title above each, as a PNG (written atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.4, rows * 1.55), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        ax.imshow(pixels, cmap="gray" if image.shape[0] == 1 else None, vmin=0, vmax=255)
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
