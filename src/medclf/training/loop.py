"""The fit loop: read it top to bottom in :meth:`Trainer.fit`.

Images arrive as uint8 rows (N, C, H, W) already decoded and cached, in RAM or memory-mapped from the decode
cache (:class:`medclf.data.rows.Rows`). Each step gathers a batch by index, augments it on uint8, converts to
float in [0, 1] on the device, and runs forward/backward. There is no DataLoader and no per-image Python in the
hot path: that is what keeps a warm epoch at the speed of pure compute on a CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medclf.config import OptimizerConfig, SchedulerConfig, TrainingConfig
from medclf.data.augmentation import BatchTransform, build_augmentation
from medclf.data.rows import Rows
from medclf.errors import ConfigError
from medclf.evaluation.metrics import classification_metrics
from medclf.models.freezing import apply_freeze, frozen_eval_modules
from medclf.training.callbacks import BestWeights, Callback, EarlyStopping, monitor_mode
from medclf.training.device import Runtime, resolve_runtime, torch_threads
from medclf.training.distributed import (
    all_mean,
    gather_probs,
    is_distributed,
    own_generator,
    shard,
    sync_buffers,
    world,
    wrap,
)
from medclf.training.ema import WeightEma
from medclf.training.feeding import make_feed
from medclf.training.losses import build_loss, probabilities
from medclf.training.mixing import BatchStep, MixBatch, ProgressiveResize, chain, mixup_problem
from medclf.training.optimizers import build_optimizer
from medclf.training.sampling import plan_labels, plan_size, training_plan
from medclf.training.schedulers import build_scheduler

__all__ = ["TTA_FLIPS", "FitResult", "Trainer", "TrainingAugmentation", "augment_batch", "batch_indices",
           "compile_problem", "predict_proba", "train_step", "training_augmentations", "tta_probabilities"]


@dataclass
class FitResult:
    """What one fit produced: the per-epoch history and the epoch whose weights were kept."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float
    train_time_s: float
    runtime: dict[str, Any] = field(default_factory=dict)
    stopped_epoch: int | None = None  # the epoch early stopping ended a stage (with stages: the latest stop)
    activation: str = "softmax"  # how logits become probabilities (medclf.training.losses.OUTPUT_ACTIVATIONS)
    trainable_per_stage: list[int] = field(default_factory=list)  # parameters each stage trained


@dataclass(frozen=True)
class Stage:
    """One stage of a fit: its epochs, optimizer, schedule and freezing rule."""

    index: int
    epochs: int
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig
    freeze: Any
    freeze_batchnorm: bool
    kind: str = "sgd"  # probe: the head fitted by logistic regression on the frozen backbone's features


def fit_stages(cfg: TrainingConfig) -> list[Stage]:
    """The configured stages, or a single stage made of the training section's own keys."""
    if cfg.stages:
        return [Stage(i, s.epochs, s.optimizer, s.scheduler, s.freeze, s.freeze_batchnorm, s.kind)
                for i, s in enumerate(cfg.stages)]
    return [Stage(0, cfg.epochs, cfg.optimizer, cfg.scheduler, cfg.freeze, cfg.freeze_batchnorm)]


def compile_problem(cfg: TrainingConfig) -> str | None:
    """Why ``training.compile`` cannot work with ``cfg``'s stages, as a sentence; None when it can.

    The model is compiled before its first sgd stage. A probe stage reads pooled features through a forward
    hook added to the final linear layer, and a compiled model never calls a hook added after compiling (its
    guards do not watch hooks): a later probe stage would silently get no features.
    """
    kinds = [stage.kind for stage in fit_stages(cfg)]
    if cfg.compile and "sgd" in kinds and "probe" in kinds[kinds.index("sgd"):]:
        return ("true compiles the model before its first sgd stage, and a probe stage after it would read its "
                "features through a forward hook, which a compiled model skips. Put the probe stages first "
                f"(stage kinds here: {', '.join(kinds)}), or set training.compile: false")
    return None


def batch_indices(n: int, batch_size: int, *, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Index batches over ``n`` items, shuffled when a generator is given.

    A trailing batch of one image is dropped while training (BatchNorm cannot normalise a single sample).
    """
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = list(order.split(batch_size))
    if generator is not None and len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def _n_train_steps(n: int, batch_size: int, *, min_last: int = 2) -> int:
    """Batches per training epoch, as :func:`_batches` makes them (a last batch under ``min_last`` is dropped)."""
    steps = -(-n // batch_size)
    last = n - (steps - 1) * batch_size
    return steps - 1 if steps > 1 and last < min_last else steps


def _min_last_batch() -> int:
    """The smallest last batch a training epoch keeps: two images per process, as BatchNorm needs two."""
    return 2 * (world()[1] if is_distributed() else 1)


def _to_input(x: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """uint8 batch -> float in [0, 1] on the device (normalisation lives in the model)."""
    return x.to(runtime.device, non_blocking=True).float().div_(255.0)


# the image axes of an NCHW batch each test-time augmentation (``evaluation.tta``) flips
TTA_FLIPS: dict[str, tuple[int, ...]] = {"hflip": (-1,), "vflip": (-2,)}


def tta_probabilities(model: nn.Module, x: torch.Tensor, *, activation: str, tta: Sequence[str] = ()) -> torch.Tensor:
    """Probabilities (N, K) of ``model`` on float batch ``x``, averaged over the identity and each flip in ``tta``.

    Probabilities, not logits, are averaged: a sigmoid's mean logit is not its mean probability. Plain torch
    ops only, so the ONNX export (:mod:`medclf.inference.export`) traces this same function.
    """
    probs = probabilities(model(x), activation)
    for name in tta:
        probs = probs + probabilities(model(torch.flip(x, TTA_FLIPS[name])), activation)
    return probs / (1 + len(tta))


@torch.no_grad()
def predict_proba(
    model: nn.Module, images: torch.Tensor | Rows, *, batch_size: int, runtime: Runtime, activation: str = "softmax",
    tta: Sequence[str] = (),
) -> np.ndarray:
    """Class (or label) probabilities (N, K) float64 of ``images`` (N, C, H, W) uint8 (a tensor or Rows), in eval mode.

    ``activation`` turns logits into probabilities: ``softmax``, ``binary`` (one logit -> two classes),
    ``sigmoid`` (multi-label), ... (:data:`medclf.training.losses.OUTPUT_ACTIVATIONS`). ``tta`` names flips
    (:data:`TTA_FLIPS`) whose predictions are averaged with the unflipped image's.
    """
    unknown = [name for name in tta if name not in TTA_FLIPS]
    if unknown:
        raise ConfigError(f"test-time augmentation {unknown} is not one of {sorted(TTA_FLIPS)}.")
    model.eval()
    images = Rows.of(images)
    out = []
    for idx in batch_indices(len(images), batch_size):
        with runtime.autocast():
            probs = tta_probabilities(model, _to_input(images.take(idx), runtime), activation=activation, tta=tta)
        out.append(probs.float().cpu())
    if not out:
        return np.zeros((0, 0))
    return torch.cat(out).double().numpy()


# the output activations whose head a logistic regression is (the probe writes softmax, one-logit and per-label fits)
PROBE_ACTIVATIONS = ("softmax", "binary", "sigmoid")

MetricsFn = Callable[[np.ndarray, np.ndarray], dict[str, float]]


class Trainer:
    """Fits one model on one training split, choosing the best epoch on a validation split.

    Args:
        model: a :class:`medclf.models.Classifier` (or any module taking float images in [0, 1]).
        cfg: the ``training`` section.
        class_names: names of the output classes (or labels), for per-class validation metrics.
        seed: seeds batch order, resampling and augmentation (model initialisation is seeded by the caller).
        callbacks: extra callbacks (progress, history...), called after the built-in ones.
        metrics_fn: ``(y_true, probs) -> {metric: value}`` for validation; default: the classification metrics.
        multilabel: targets are multi-hot floats (N, L) and outputs independent sigmoids.
        probe_features: ``(split name, rows) -> features (N, D)`` for a probe stage (the study passes a cached
            one); default: :func:`medclf.training.probe.pooled_features`, computed afresh.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainingConfig,
        *,
        class_names: Sequence[str],
        seed: int,
        callbacks: Sequence[Callback] = (),
        metrics_fn: MetricsFn | None = None,
        multilabel: bool = False,
        probe_features: Callable[[str, Rows], np.ndarray] | None = None,
    ) -> None:
        self.model, self.cfg, self.class_names, self.seed = model, cfg, list(class_names), seed
        self.probe_features = probe_features
        self.multilabel = multilabel
        self.metrics_fn = metrics_fn or (lambda y, p: classification_metrics(y, p, class_names=self.class_names))
        self.best = BestWeights(cfg.monitor, monitor_mode(cfg))
        self.early_stopping = _early_stopping(cfg)
        self.ema = WeightEma(cfg.ema) if cfg.ema is not None else None
        self.resize = ProgressiveResize(cfg.progressive_resize) if cfg.progressive_resize is not None else None
        self.batch_step: BatchStep | None = None  # what train_step does to the float batch (set by fit)
        builtin = [c for c in (self.ema, self.resize, self.best, self.early_stopping) if c is not None]
        self.callbacks: list[Callback] = [*builtin, *callbacks]
        self.should_stop = False  # a callback sets it to end the current stage after this epoch
        self.steps_per_epoch = 0
        self.runtime: Runtime | None = None
        self.train_model = model  # what the steps call: ``model``, or its DDP wrapper under torchrun
        self.own_rng: torch.Generator | None = None  # this process's augmentation draws (set by fit)
        self.activation = "softmax"
        self.history: list[dict[str, Any]] = []  # one dict per finished epoch, for callbacks
        self.trainable_per_stage: list[int] = []
        self.probe_fits: list[Any] = []  # each probe stage's ProbeFit (its C, inner folds and notes), in order
        if problem := compile_problem(cfg):
            raise ConfigError(f"training.compile: {problem}")
        if problem := mixup_problem(cfg, multilabel=multilabel):
            raise ConfigError(f"training.mixup: {problem}")
        if multilabel and cfg.oversample != "none":
            raise ConfigError(
                f"training.oversample: {cfg.oversample!r} balances classes of single-label data; a multi-label "
                "task needs oversample: none (weight rare labels with training.loss.pos_weight instead)."
            )

    def fit(
        self, train_x: torch.Tensor | Rows, train_y: torch.Tensor, val_x: torch.Tensor | Rows, val_y: torch.Tensor
    ) -> FitResult:
        """Train every stage (or until a callback stops it) and keep the best weights.

        ``train_x``/``val_x`` are uint8 (N, C, H, W), tensors or :class:`~medclf.data.rows.Rows` (e.g. memory-mapped);
        ``train_y``/``val_y`` class indices, or multi-hot floats. ``training.num_threads`` holds for the fit only.
        """
        with torch_threads(self.cfg.num_threads):
            return self._fit(train_x, train_y, val_x, val_y)

    def _fit(self, train_x: torch.Tensor | Rows, train_y: torch.Tensor, val_x: torch.Tensor | Rows,
             val_y: torch.Tensor) -> FitResult:
        cfg = self.cfg
        runtime = self.runtime = resolve_runtime(cfg, self.model)
        runtime.place(self.model)  # device and memory format, before compiling and before the optimizer
        train_x, val_x = Rows.of(train_x), Rows.of(val_x)  # one gather path for tensors and memory maps
        feed = make_feed(train_x, runtime)  # CUDA: the uint8 set on the GPU when it fits, else a pinned buffer
        generator = torch.Generator().manual_seed(self.seed)
        self.own_rng = own_generator(generator, seed=self.seed)  # the plan's generator, except under torchrun
        objective = build_loss(cfg.loss, class_names=self.class_names, train_targets=train_y.numpy(),
                               multilabel=self.multilabel).to(runtime.device)
        self.activation = objective.activation
        mix = MixBatch(cfg.mixup, n_classes=objective.n_outputs, generator=self.own_rng) if cfg.mixup else None
        self.batch_step = chain(self.resize, mix)  # resized first: mixing the smaller batch is cheaper
        augment = training_augmentations(cfg, size_hw=tuple(train_x.shape[-2:]), channels=int(train_x.shape[1]))
        n_planned = plan_size(plan_labels(train_y.numpy(), multilabel=self.multilabel), cfg.oversample)
        self.steps_per_epoch = _n_train_steps(n_planned, cfg.batch_size, min_last=_min_last_batch())
        scaler = torch.amp.GradScaler(enabled=runtime.amp_dtype == torch.float16)
        history = self.history = []
        start, epoch, step = time.perf_counter(), 0, 0

        self._call("on_fit_start")
        stages = fit_stages(cfg)
        for stage in stages:
            if stage.index > 0 and self.best.stage_best.state is not None:
                self.model.load_state_dict(self.best.stage_best.state)  # from the previous stage's best epoch
            frozen_bn = apply_freeze(self.model, stage.freeze, freeze_batchnorm=stage.freeze_batchnorm)
            self.trainable_per_stage.append(sum(p.numel() for p in self.model.parameters() if p.requires_grad))
            self.should_stop = False
            self._call("on_stage_start", stage.index)
            if stage.kind == "probe":  # one epoch, no optimizer: a convex fit of the last linear layer
                epoch += 1
                self._probe_epoch(epoch, step, stage, train_x, train_y, val_x, val_y, objective)
                continue
            if cfg.compile and stage is next(s for s in stages if s.kind != "probe"):  # after any probe stage
                self.model.compile()  # in place, so state_dict keys keep their names (see compile_problem)
            self.train_model = wrap(self.model) if is_distributed() else self.model  # after freezing: DDP keeps
            # the parameters that train at its construction
            optimizer = build_optimizer(self.model, stage.optimizer)
            schedule = build_scheduler(optimizer, stage.scheduler, epochs=stage.epochs,
                                       steps_per_epoch=self.steps_per_epoch, monitor=cfg.monitor,
                                       mode=monitor_mode(cfg))
            for _ in range(stage.epochs):
                epoch += 1
                epoch_start = time.perf_counter()
                self._call("on_epoch_start", epoch)
                lr = optimizer.param_groups[0]["lr"]
                losses = self._train_epoch(feed, train_y, objective, optimizer, schedule, scaler, augment,
                                           generator, frozen_bn)
                step += len(losses)
                logs = {"epoch": epoch} | ({"stage": stage.index} if cfg.stages else {}) | {"step": step, "lr": lr}
                logs["train_loss"] = float(all_mean(torch.stack(losses).mean())) if losses else math.nan
                logs |= self._validate(val_x, val_y)
                logs["time_s"] = time.perf_counter() - epoch_start
                history.append(logs)
                schedule.after_epoch(logs)
                self._call("on_epoch_end", epoch, logs)
                if self.should_stop:
                    break
        self.train_model = self.model  # without the DDP wrapper: evaluation and saving use the plain model
        self._call("on_fit_end")
        return self._result(history, start, runtime)

    def _probe_epoch(self, epoch: int, step: int, stage: Stage, train_x: Rows, train_y: torch.Tensor, val_x: Rows,
                     val_y: torch.Tensor, objective: nn.Module) -> None:
        """A probe stage's one epoch: fit the head on the frozen backbone's features of the training rows, write it
        into the model's last linear layer, then validate and log it as any epoch (history, best weights)."""
        from medclf.training.probe import fit_linear_probe, pooled_features, write_probe  # noqa: PLC0415

        if self.activation not in PROBE_ACTIVATIONS:
            raise ConfigError(
                f"training.loss.name: {self.cfg.loss.name!r} gives this task {self.activation!r} outputs, which a "
                f"probe stage cannot write (it writes {', '.join(PROBE_ACTIVATIONS)} heads). Use cross_entropy, "
                "or bce on a two-class or multi-label task"
            )
        epoch_start = time.perf_counter()
        self._call("on_epoch_start", epoch)
        if self.probe_features is not None:
            features = self.probe_features("train", train_x)
        else:
            features = pooled_features(self.model, train_x, batch_size=self.cfg.eval_batch_size, runtime=self.runtime)
        probe = self.cfg.probe
        fit = fit_linear_probe(features, train_y.numpy(), multilabel=self.multilabel,
                               class_weight=self._probe_class_weight(objective), seed=self.seed, cs=probe.cs,
                               inner_folds=probe.inner_folds, max_iter=probe.max_iter,
                               n_classes=None if self.multilabel else len(self.class_names))
        write_probe(self.model, fit, self.activation)
        self.probe_fits.append(fit)
        # no optimizer ran: no learning rate (a gap in the report's lr panel) and no steps
        logs = {"epoch": epoch} | ({"stage": stage.index} if self.cfg.stages else {}) | {"step": step, "lr": math.nan}
        logs["train_loss"] = float(fit.train_log_loss)
        logs |= self._validate(val_x, val_y)
        logs["time_s"] = time.perf_counter() - epoch_start
        self.history.append(logs)
        self._call("on_epoch_end", epoch, logs)

    def _probe_class_weight(self, objective: nn.Module) -> dict[int, float] | str | None:
        """training.loss.class_weights as scikit-learn's ``class_weight``: single-label, {class index: weight} as
        the loss resolved them on this training split; multi-label, ``balanced`` (each label's positives
        against its negatives, in its own fit)."""
        written = self.cfg.loss.class_weights
        if written is None:
            return None
        if self.multilabel:
            if written != "balanced":
                raise ConfigError(
                    f"training.loss.class_weights: {written!r} weighs the labels of a multi-label task against "
                    "each other; a probe stage fits each label on its own, where such a weight only rescales the "
                    "fit. Use class_weights: balanced (positives against negatives within each label) or null."
                )
            return "balanced"
        return {i: float(w) for i, w in enumerate(objective.weight.cpu().tolist())}

    def _train_epoch(self, feed, train_y, objective, optimizer, schedule, scaler, augment, generator,
                     frozen_bn) -> list[torch.Tensor]:
        """One pass over this epoch's resampling plan; returns the batches' detached losses."""
        cfg, runtime = self.cfg, self.runtime
        self.model.train()
        frozen_eval_modules(frozen_bn)
        order, is_copy = training_plan(train_y.numpy(), cfg.oversample, multilabel=self.multilabel,
                                       generator=generator)
        losses = []
        for batch, idx in enumerate(_batches(order, cfg.batch_size, min_last=_min_last_batch())):
            idx = shard(idx)  # this process's share of the global batch (all of it in one process)
            x = augment_batch(feed.take(order[idx]), is_copy[idx], augment, self.own_rng)
            y = train_y[order[idx]].to(runtime.device, non_blocking=True)
            losses.append(train_step(self.train_model, objective, optimizer, scaler, x, y, runtime,
                                     batch_step=self.batch_step))
            schedule.after_batch()
            self._call("on_batch_end", batch, losses[-1])  # a tensor: .item() would sync the GPU
        return losses

    def _result(self, history: list[dict[str, Any]], start: float, runtime: Runtime) -> FitResult:
        restore = self.cfg.early_stopping.restore_best
        if restore and self.best.best_state is not None:
            self.model.load_state_dict(self.best.best_state)
        best_epoch = (self.best.best_epoch or len(history)) if restore else len(history)
        best_score = self.best.best_score if restore else float(history[-1].get(self.cfg.monitor, math.nan))
        for p in self.model.parameters():
            p.requires_grad_(True)  # the saved model is a plain model, whatever the last stage froze
        return FitResult(
            history=history,
            best_epoch=best_epoch,
            best_score=best_score,
            train_time_s=time.perf_counter() - start,
            runtime=runtime.describe() | ({"processes": world()[1]} if is_distributed() else {}),
            stopped_epoch=self.early_stopping.stopped_epoch if self.early_stopping else None,
            activation=self.activation,
            trainable_per_stage=list(self.trainable_per_stage),
        )

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation scores and best-weight keeping copies: the weight EMA's during its stages
        (``training.ema``), else the model itself."""
        ema = self.ema.module if self.ema is not None else None
        return ema if ema is not None else self.model

    def _validate(self, val_x: Rows, val_y: torch.Tensor) -> dict[str, float]:
        if len(val_x) == 0:
            return {}
        if is_distributed():  # each process predicts its shard with rank 0's buffers; all gather the whole set
            sync_buffers(self.eval_model)
            val_x = val_x.subset(shard(np.arange(len(val_x))))
        probs = gather_probs(predict_proba(self.eval_model, val_x, batch_size=self.cfg.eval_batch_size,
                                           runtime=self.runtime, activation=self.activation))
        metrics = self.metrics_fn(val_y.numpy(), probs)
        return {f"val_{name}": value for name, value in metrics.items() if "/" not in name}

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)


def train_step(
    model: nn.Module, objective: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    x: torch.Tensor, y: torch.Tensor, runtime: Runtime, *, batch_step: BatchStep | None = None,
) -> torch.Tensor:
    """One optimisation step on a uint8 batch ``x`` and its targets ``y`` (on the device); the detached loss.

    ``batch_step`` changes the float batch and targets first (progressive resizing, mixup:
    :mod:`medclf.training.mixing`). Shared by :meth:`Trainer.fit` and the learning-rate finder, so both train
    exactly alike (autocast, scaler).
    """
    x_in = _to_input(x, runtime)
    if batch_step is not None:
        x_in, y = batch_step(x_in, y)
    with runtime.autocast():
        loss = objective(model(x_in), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def _batches(order: torch.Tensor, batch_size: int, *, min_last: int = 2) -> list[torch.Tensor]:
    """Positions into ``order`` in batches; a trailing batch under ``min_last`` is dropped (BatchNorm needs two
    images, in each process under torchrun)."""
    batches = list(torch.arange(len(order)).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < min_last:
        batches.pop()
    return batches


def _early_stopping(cfg: TrainingConfig) -> EarlyStopping | None:
    """Early stopping on ``training.monitor`` (the config makes ``early_stopping.monitor`` the same value)."""
    es = cfg.early_stopping
    if es.patience is None:
        return None
    relative = isinstance(es.min_delta, str)
    delta = float(es.min_delta[:-1]) / 100 if relative else float(es.min_delta)
    return EarlyStopping(cfg.monitor, monitor_mode(cfg), patience=es.patience, min_delta=delta, relative=relative)


@dataclass(frozen=True)
class TrainingAugmentation:
    """The augmentation of original training images, and the one oversampled copies pass through.

    ``copies`` is None when copies stay exact (``oversample: duplicate``) or there are none.
    """

    originals: BatchTransform | None
    copies: BatchTransform | None


def training_augmentations(cfg: TrainingConfig, *, size_hw: tuple[int, int], channels: int) -> TrainingAugmentation:
    """The training augmentation of ``cfg``; with ``oversample: augment`` the copies get it too (``basic`` if none)."""
    aug = cfg.augmentation
    originals = build_augmentation(aug.presets, aug.params, aug.transforms, size_hw=size_hw, channels=channels)
    copies = None
    if cfg.oversample == "augment":
        copies = originals or build_augmentation(["basic"], size_hw=size_hw, channels=channels)
    return TrainingAugmentation(originals, copies)


def augment_batch(
    x: torch.Tensor, is_copy: torch.Tensor, augment: TrainingAugmentation, generator: torch.Generator
) -> torch.Tensor:
    """A uint8 batch as the model sees it: originals augmented, added copies exact or augmented (``augment``)."""
    if not bool(is_copy.any()):
        return augment.originals(x, generator) if augment.originals is not None else x
    x = x.clone()
    if augment.originals is not None:
        x[~is_copy] = augment.originals(x[~is_copy], generator)
    if augment.copies is not None:
        x[is_copy] = augment.copies(x[is_copy], generator)
    return x
