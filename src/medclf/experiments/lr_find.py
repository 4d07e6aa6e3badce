"""``medclf lr-find``: the learning-rate range test on the first fold's training split, as the study would train it.

The data, folds, initial weights (seeded as fold 0's) and every training setting come from the study's config, so
the curve is the one the study's first fold would start from. The test writes only ``lr_find.csv`` here (and the
command ``lr_find.png``) into its own folder; no run folder is read or changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from medclf import runfolder
from medclf.config import Config
from medclf.data import load_dataset
from medclf.data.rows import Rows
from medclf.data.splitting import make_folds
from medclf.models import build_model
from medclf.training.losses import n_outputs
from medclf.training.lr_find import LR_FIND_COLUMNS, LRFindResult, check_lr_range, lr_range_test

__all__ = ["LR_FIND_CSV", "LR_FIND_PNG", "find_learning_rate", "write_lr_find_csv"]

LR_FIND_CSV = "lr_find.csv"
LR_FIND_PNG = "lr_find.png"


def find_learning_rate(
    config: Config,
    *,
    start: float = 1e-7,
    end: float = 10.0,
    n_steps: int = 100,
    on_step: Callable[[int, float, float], None] | None = None,
) -> LRFindResult:
    """The range test of ``config``'s model on its first fold's training split.

    Args:
        config: a checked study config.
        start, end: the first and last ``training.optimizer.lr`` of the sweep (``head_lr`` keeps its ratio).
        n_steps: mini-batches at most.
        on_step: called after each step with ``(step, lr, loss)``.

    Raises:
        DataError: the data cannot be loaded or split into folds.
        ConfigError: the range or the step count is out of range.
    """
    check_lr_range(start, end, n_steps)  # before the data is loaded: a typo in --start should cost nothing
    data = load_dataset(config.data)
    fold = make_folds(data, config.cv, seed=config.seed)[0]
    seed = config.seed + fold.index  # the study's seeding of this fold: the same initial weights
    torch.manual_seed(seed)
    images = Rows(data.images, index=fold.train)  # a view of the split: no copy of its rows
    labels = torch.from_numpy(data.labels[fold.train])
    labels = labels.float() if data.multilabel else labels  # multi-hot targets of the BCE loss
    n_out = n_outputs(config.training.loss, n_classes=len(data.class_names), multilabel=data.multilabel)
    model = build_model(config.model, in_chans=images.shape[1], n_classes=n_out, size_hw=images.shape[-2:])
    return lr_range_test(model, config.training, images, labels, class_names=data.class_names, seed=seed,
                         multilabel=data.multilabel, start=start, end=end, n_steps=n_steps, on_step=on_step)


def write_lr_find_csv(result: LRFindResult, out: Path) -> Path:
    """Write ``out/lr_find.csv`` (step, lr, loss, smoothed_loss) atomically; returns its path."""
    path = Path(out) / LR_FIND_CSV
    runfolder.write_csv(path, result.rows(), LR_FIND_COLUMNS)
    return path
