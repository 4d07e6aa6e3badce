"""``training.recipe: auto`` (the default): the recipe a fold trains with, picked by its model and data size.

Measured by benchmarks/small_data.py (docs/small-data.md, docs/benchmarks.md "Small data"): on an ImageNet-pretrained
backbone and a few hundred training images, ``probe_finetune`` (a linear probe, then a gentle fine-tuning from its
head) led the plain ``finetune`` recipe; with more images ``finetune`` led. So ``auto`` picks ``probe_finetune`` for
a pretrained backbone and at most :data:`PROBE_FINETUNE_MAX_TRAIN` training images in the fold. Everything else
(random weights, more images, a config that writes its own stages or freezing, a loss or head a probe cannot fit,
a single epoch) trains with ``finetune``, so ``auto`` computes exactly what ``finetune`` does there.

The size is the fold's, known only once the data is loaded, so the choice is made per fold, here, and recorded
in the fold's ``metrics.json`` (``recipe``); the run folder's config keeps ``auto``.
"""

from __future__ import annotations

from pydantic import ValidationError

from medclf.config import Config, TrainingConfig
from medclf.experiments.validation import probe_problems

__all__ = ["PROBE_FINETUNE_MAX_TRAIN", "auto_recipe", "resolve_recipe", "with_recipe"]

# images in a fold's training part (its validation images excluded) up to which auto trains probe_finetune.
# Measured (docs/benchmarks.md, "Small data"; cross-validation holdout AUC, paired over 5 folds): probe_finetune
# led finetune with 161 and 192 training images (phantoms, PneumoniaMNIST) and trailed it from 323 on (323,
# 384, 651, 768); the line sits between, at about their geometric middle. No single difference was significant.
PROBE_FINETUNE_MAX_TRAIN = 250
# keys a recipe's stages would silently replace: a config that writes them chose its own schedule
_OWN_SCHEDULE = {"stages", "freeze", "freeze_batchnorm"}


def with_recipe(config: Config, recipe: str) -> Config | None:
    """``config`` with the training keys it wrote re-applied over ``recipe``; None when they do not fit it."""
    written = config.training.model_dump(exclude_unset=True)
    try:
        training = TrainingConfig.model_validate(dict(written, recipe=recipe))
    except ValidationError:
        return None  # e.g. epochs: 1, which leaves probe_finetune no epoch to fine-tune
    return config.model_copy(update={"training": training})


def auto_recipe(config: Config, n_train: int) -> str:
    """The recipe ``training.recipe`` names, with ``auto`` resolved for a fold of ``n_train`` training images."""
    training = config.training
    if training.recipe != "auto":
        return training.recipe
    if (config.model.pretrained is False or n_train > PROBE_FINETUNE_MAX_TRAIN
            or training.model_fields_set & _OWN_SCHEDULE):
        return "finetune"
    candidate = with_recipe(config, "probe_finetune")
    if candidate is None or any(True for _ in probe_problems(candidate)):
        return "finetune"
    return "probe_finetune"


def resolve_recipe(config: Config, n_train: int) -> Config:
    """``config`` with ``training.recipe: auto`` replaced by the recipe it picks for ``n_train`` images."""
    chosen = auto_recipe(config, n_train)
    if chosen == config.training.recipe:
        return config
    resolved = with_recipe(config, chosen)
    assert resolved is not None, f"recipe {chosen!r} was checked to fit"  # finetune merges nothing: always fits
    return resolved
