"""Weight EMA (``training.ema``): an exponential moving average of the weights, validated and saved in their place.

timm's :class:`~timm.utils.ModelEmaV3` keeps the average (parameters and BatchNorm statistics); the
:class:`WeightEma` callback updates it after every optimizer step. While it is active, the Trainer's
``eval_model`` is the average: validation scores it, best-weight keeping copies it, and the fit ends with it in
the model, so the saved weights are the average's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from timm.utils import ModelEmaV3
from torch import nn

from medclf.config import EmaConfig
from medclf.training.callbacks import Callback

if TYPE_CHECKING:
    from medclf.training.loop import Trainer

__all__ = ["WeightEma"]


class WeightEma(Callback):
    """Keep a :class:`~timm.utils.ModelEmaV3` of the trainer's model during its sgd stages.

    Each sgd stage restarts the average from the weights it starts from (and restarts the decay warm-up): a
    stage begins from the previous stage's best weights (already an average) under another freezing rule and
    learning rate, so steps of the previous stage's trajectory would only drag the new one back. A probe
    stage takes no optimizer steps and writes its head into the model itself, so there the model is
    validated and kept as it is.
    """

    def __init__(self, cfg: EmaConfig) -> None:
        self.cfg = cfg
        self.ema: ModelEmaV3 | None = None
        self.active = False  # an sgd stage is running: the average stands for the model
        self.steps = 0  # optimizer steps in this stage (the warm-up's clock)

    @property
    def module(self) -> nn.Module | None:
        """The averaged model while active, else None."""
        return self.ema.module if self.active and self.ema is not None else None

    def on_fit_start(self, trainer: Trainer) -> None:
        # a copy of the placed model (device, memory format), taken before training.compile compiles the model
        # in place: the average stays a plain module, with the model's state_dict keys
        self.ema = ModelEmaV3(trainer.model, decay=self.cfg.decay, use_warmup=self.cfg.warmup)

    def on_stage_start(self, trainer: Trainer, stage: int) -> None:
        kind = trainer.cfg.stages[stage].kind if trainer.cfg.stages else "sgd"
        self.active, self.steps = kind == "sgd", 0
        if self.active:
            self.ema.set(trainer.model)

    def on_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        self.steps += 1
        # step 1 (and with warmup the first few) gives decay 0 or near it: the average starts at the weights
        self.ema.update(trainer.model, step=self.steps if self.cfg.warmup else None)

    def on_fit_end(self, trainer: Trainer) -> None:
        # the last epoch's average, for restore_best: false; with restore_best the best epoch's average follows
        if self.module is not None:
            trainer.model.load_state_dict(self.module.state_dict())
