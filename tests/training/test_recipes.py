"""The fit loop with the issue-4 levers: oversampling, early stopping, freezing, stages, head learning rate."""

import math

import numpy as np
import pytest
import torch

import medclf.training.loop as loop
from medclf.config import ModelConfig, TrainingConfig
from medclf.errors import ConfigError
from medclf.models import build_model
from medclf.training import Trainer
from medclf.training.callbacks import EarlyStopping, monitor_mode


def _toy(n=160, seed=0, minority_every=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    y = (torch.arange(n) % minority_every == 0).long()  # 1 in 4 is class 1
    x[y == 1, :, 4:12, 4:12] += 150
    return x, y


def _trainer(cfg, model_cfg=None, **kw):
    torch.manual_seed(0)
    model = build_model(model_cfg or ModelConfig(name="test_resnet"), in_chans=1, n_classes=2, size_hw=(16, 16))
    return Trainer(model, cfg, class_names=["a", "b"], seed=0, **kw)


def _cfg(**kw):
    return TrainingConfig(**({"epochs": 1, "batch_size": 16, "device": "cpu"} | kw))


def _spy_on_loss_targets(monkeypatch) -> list[np.ndarray]:
    """Record the targets of every training batch, as the loss receives them."""
    batches = []
    real_build = loop.build_loss

    def spy_build(*args, **kwargs):
        objective = real_build(*args, **kwargs)
        real_fn = objective.fn
        objective.fn = lambda self, logits, target: batches.append(target.numpy().copy()) or real_fn(
            self, logits, target)
        return objective

    monkeypatch.setattr(loop, "build_loss", spy_build)
    return batches


@pytest.mark.parametrize("mode", ["duplicate", "augment", "weighted_sampler"])
def test_oversampling_balances_what_the_model_sees_and_never_touches_validation(monkeypatch, mode):
    batches, val_seen = _spy_on_loss_targets(monkeypatch), []
    x, y = _toy()
    trainer = _trainer(_cfg(epochs=2, oversample=mode),
                       metrics_fn=lambda t, p: val_seen.append(t.copy()) or {"loss": 0.0})
    trainer.fit(x[:120], y[:120], x[120:], y[120:])
    assert np.bincount(y[:120].numpy()).tolist() == [90, 30]
    per_epoch = len(batches) // 2
    for epoch in (batches[:per_epoch], batches[per_epoch:]):
        counts = np.bincount(np.concatenate(epoch), minlength=2)
        if mode == "weighted_sampler":
            assert counts.sum() == 120 and abs(counts[1] - 60) < 25
        else:
            assert counts.tolist() == [90, 90]  # 180 images, no lonely last batch dropped at batch size 16
    assert all(np.array_equal(v, y[120:].numpy()) for v in val_seen)  # validation: every image once, unchanged


@pytest.mark.parametrize("mode", ["duplicate", "augment"])
def test_duplicated_copies_stay_exact_and_augmented_copies_change(mode):
    from medclf.training.loop import augment_batch, training_augmentations

    x, _ = _toy(n=32)
    is_copy = torch.arange(32) >= 16
    cfg = _cfg(oversample=mode, augmentation={"presets": []})
    augment = training_augmentations(cfg, size_hw=(16, 16), channels=1)
    out = augment_batch(x, is_copy, augment, torch.Generator().manual_seed(0))
    assert torch.equal(out[:16], x[:16])  # no presets: originals untouched
    copies_changed = not torch.equal(out[16:], x[16:])
    assert copies_changed == (mode == "augment")  # augment: the copies pass through `basic`


def test_no_oversampling_sees_the_fold_as_it_is(monkeypatch):
    seen = []
    real_plan = loop.training_plan
    monkeypatch.setattr(loop, "training_plan", lambda labels, m, *, multilabel, generator: seen.append(
        np.bincount(labels[real_plan(labels, m, multilabel=multilabel, generator=generator)[0].numpy()])) or real_plan(
        labels, m, multilabel=multilabel, generator=generator))
    x, y = _toy()
    _trainer(_cfg()).fit(x[:120], y[:120], x[120:], y[120:])
    assert seen[0].tolist() == [90, 30]


def test_early_stopping_callback_stops_after_patience_epochs():
    class T:
        should_stop = False

    es = EarlyStopping("val_loss", "min", patience=2)
    t = T()
    for epoch, loss in enumerate([1.0, 0.8, 0.85, 0.9, 0.7], start=1):
        es.on_epoch_end(t, epoch, {"val_loss": loss})
        if t.should_stop:
            break
    assert es.stopped_epoch == 4


def test_relative_min_delta_needs_a_large_enough_improvement():
    class T:
        should_stop = False

    es = EarlyStopping("val_auc_macro", "max", patience=2, min_delta=0.10, relative=True)
    t = T()
    for epoch, auc in enumerate([0.50, 0.54, 0.545, 0.60], start=1):
        es.on_epoch_end(t, epoch, {"val_auc_macro": auc})
        if t.should_stop:
            break
    assert es.stopped_epoch == 3  # 0.54 and 0.545 are each under 10 % better than 0.50


def test_early_stopping_in_the_fit_records_the_stop_epoch():
    # a learning rate of ~0 leaves the validation loss flat: no improvement after epoch 1
    cfg = _cfg(epochs=8, early_stopping={"patience": 2, "min_delta": 0.5},
               optimizer={"lr": 1e-12}, scheduler={"name": "none"})
    x, y = _toy()
    result = _trainer(cfg).fit(x[:120], y[:120], x[120:], y[120:])
    assert len(result.history) == 3 and result.stopped_epoch == 3


def test_min_delta_as_a_percentage_in_the_config_is_relative():
    es = loop._early_stopping(_cfg(early_stopping={"patience": 2, "min_delta": "10%", "monitor": "val_auc_macro"}))
    assert (es.min_delta, es.relative, es.monitor, es.mode) == (pytest.approx(0.10), True, "val_auc_macro", "max")
    assert loop._early_stopping(_cfg(early_stopping={"patience": 2, "min_delta": 0.01})).relative is False
    with pytest.raises(ValueError, match=r"min_delta must be a number or a percentage such as '10%', got 'ten'"):
        _cfg(early_stopping={"patience": 2, "min_delta": "ten"})


def test_early_stopping_and_the_kept_epoch_watch_one_value():
    cfg = _cfg(early_stopping={"patience": 2, "monitor": "val_auc_macro"})
    assert cfg.monitor == "val_auc_macro" and monitor_mode(cfg) == "max"  # early stopping's monitor is the monitor
    with pytest.raises(ValueError, match=r"early_stopping.monitor \(val_auc_macro\) differs from monitor"):
        _cfg(monitor="val_loss", early_stopping={"patience": 2, "monitor": "val_auc_macro"})
    assert monitor_mode(_cfg(monitor="val_f1_macro", early_stopping={"mode": "min"})) == "min"  # mode wins
    assert monitor_mode(_cfg(monitor="val_hamming_loss")) == "min"  # multi-label metrics are monitorable


def test_early_stopping_on_an_unlogged_value_names_what_is_logged():
    cfg = _cfg(epochs=2, early_stopping={"patience": 1, "monitor": "val_auc_macro"})
    x, y = _toy()
    trainer = _trainer(cfg, metrics_fn=lambda t, p: {"loss": 0.5})
    with pytest.raises(ConfigError, match=r"'val_auc_macro' is not logged.*train_loss, val_loss"):
        trainer.fit(x[:120], y[:120], x[120:], y[120:])


def test_restore_best_false_keeps_the_last_epoch():
    cfg = _cfg(epochs=3, early_stopping={"restore_best": False})
    x, y = _toy()
    trainer = _trainer(cfg)
    result = trainer.fit(x[:120], y[:120], x[120:], y[120:])
    assert result.best_epoch == 3


def test_frozen_backbone_does_not_move_and_head_does():
    x, y = _toy()
    trainer = _trainer(_cfg(epochs=1, freeze="backbone"))
    model = trainer.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit(x[:120], y[:120], x[120:], y[120:])
    head = {f"net.{k}" for k, _ in model.net.get_classifier().named_parameters(prefix="fc")}
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == head  # weights, biases and BatchNorm statistics of the backbone are untouched
    assert all(p.requires_grad for p in model.parameters())  # the saved model is plain again


def test_frozen_backbone_holds_timm_batchnorm_act_layers_too():
    """EfficientNet's BatchNorm is timm's BatchNormAct2d, which has its activation as a child module: it is a layer
    all the same, so ``freeze: backbone`` keeps its weights and running statistics and ``last_n`` counts it."""
    x, y = _toy()
    trainer = _trainer(_cfg(epochs=1, freeze="backbone"), ModelConfig(name="tf_efficientnet_lite0"))
    model = trainer.model
    layers = model.backbone_modules()
    norms = [m for m in model.net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(any(m is layer for layer in layers) for m in norms)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit(x[:120], y[:120], x[120:], y[120:])
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {f"net.{k}" for k, _ in model.net.get_classifier().named_parameters(prefix="classifier")}


def test_last_n_trains_only_the_last_layers():
    from medclf.models.freezing import apply_freeze

    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=2)
    layers = model.backbone_modules()

    class Rule:
        last_n = 3

    frozen_bn = apply_freeze(model, Rule(), freeze_batchnorm=True)
    trainable = [m for m in layers if all(p.requires_grad for p in m.parameters(recurse=False))]
    assert trainable == [m for m in layers[-3:] if not isinstance(m, torch.nn.BatchNorm2d)]
    assert all(p.requires_grad for p in model.head_module().parameters())
    assert all(isinstance(m, torch.nn.BatchNorm2d) for m in frozen_bn) and frozen_bn


def test_each_stage_starts_from_the_previous_stages_best_epoch():
    from medclf.training import Callback

    class Record(Callback):
        def __init__(self):
            self.states, self.stage_starts = {}, {}

        def on_stage_start(self, trainer, stage):
            self.stage_starts[stage] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

        def on_epoch_end(self, trainer, epoch, logs):
            self.states[epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    scripted = iter([0.5, 0.1, 0.9, 0.3, 0.6, 0.7])  # validation losses: stage 0's best is epoch 2, not its last
    record = Record()
    cfg = _cfg(stages=[{"epochs": 3, "lr": 1e-2}, {"epochs": 2}, {"epochs": 1}], scheduler={"name": "none"})
    x, y = _toy()
    trainer = _trainer(cfg, callbacks=[record], metrics_fn=lambda t, p: {"loss": next(scripted)})
    result = trainer.fit(x[:120], y[:120], x[120:], y[120:])
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(record.stage_starts[1], record.states[2]) and not same(record.stage_starts[1], record.states[3])
    # stage 2 starts from stage 1's best (epoch 4), not its last (5) nor the best of all (2), which is kept at the end
    assert same(record.stage_starts[2], record.states[4])
    assert result.best_epoch == 2 and same(trainer.model.state_dict(), record.states[2])


def test_stages_run_in_order_from_the_best_weights_with_their_own_rules():
    cfg = _cfg(stages=[{"epochs": 1, "freeze": "backbone", "lr": 1e-2},
                       {"epochs": 2, "freeze": "none", "optimizer": {"name": "sgd", "lr": 1e-3}}])
    assert cfg.epochs == 3 and cfg.stages[0].optimizer.name == "adamw" and cfg.stages[0].optimizer.lr == 1e-2
    x, y = _toy()
    result = _trainer(cfg).fit(x[:120], y[:120], x[120:], y[120:])
    assert [h["stage"] for h in result.history] == [0, 1, 1]
    total = sum(p.numel() for p in _trainer(cfg).model.parameters())
    head = sum(p.numel() for p in _trainer(cfg).model.head_module().parameters())
    assert result.trainable_per_stage == [head, total]
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.history[0]["step"] < result.history[1]["step"] < result.history[2]["step"]


def test_head_lr_gives_the_head_its_own_learning_rate():
    from medclf.config import OptimizerConfig
    from medclf.training.optimizers import build_optimizer

    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=2)
    opt = build_optimizer(model, OptimizerConfig(lr=1e-4, head_lr=1e-2))
    head_ids = {id(p) for p in model.head_module().parameters()}
    for group in opt.param_groups:
        is_head = {id(p) in head_ids for p in group["params"]}
        assert len(is_head) == 1
        assert group["lr"] == (1e-2 if is_head.pop() else 1e-4)
        assert group["weight_decay"] == 0.0 or all(p.ndim > 1 for p in group["params"])
    decays = {group["weight_decay"] for group in opt.param_groups}
    assert decays == {0.0, OptimizerConfig().weight_decay}  # weights decay, biases and norms do not


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adadelta", "adagrad"])
def test_every_optimizer_trains(name):
    x, y = _toy()
    result = _trainer(_cfg(epochs=1, optimizer={"name": name, "lr": 1e-3})).fit(x[:120], y[:120], x[120:], y[120:])
    assert not math.isnan(result.history[0]["train_loss"])


def test_bce_binary_head_trains_with_one_output():
    x, y = _toy()
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=1)
    trainer = Trainer(model, _cfg(epochs=2, loss={"name": "bce"}), class_names=["a", "b"], seed=0)
    result = trainer.fit(x[:120], y[:120], x[120:], y[120:])
    assert result.activation == "binary"
    assert result.history[-1]["val_auc_macro"] > 0.5


# ------------------------------------------------------------------------------ the probe as a recipe stage
def _noisy_toy(n=160, seed=0):
    """Class 1 is a faint square in noise: a probe separates it well, never perfectly (a finite log-loss)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 120, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    y = (torch.arange(n) % 2 == 0).long()
    x[y == 1, :, 4:12, 4:12] += 40
    return x, y


def test_linear_probe_recipe_is_one_probe_stage_without_augmentation():
    cfg = TrainingConfig(recipe="linear_probe", freeze={"last_n": 2})
    assert [(s.kind, s.epochs, s.freeze) for s in cfg.stages] == [("probe", 1, "backbone")]
    assert cfg.epochs == 1 and cfg.augmentation.presets == [] and cfg.probe.cs == 10


def test_probe_finetune_gives_the_rest_of_the_epochs_to_fine_tuning():
    cfg = TrainingConfig(recipe="probe_finetune", epochs=5)
    assert [(s.kind, s.epochs, s.freeze) for s in cfg.stages] == [("probe", 1, "backbone"), ("sgd", 4, "none")]
    assert cfg.epochs == 5
    tune = cfg.stages[1]  # LP-FT as measured in docs/small-data.md: gentle, BatchNorm as the probe saw it
    assert tune.freeze_batchnorm and (tune.optimizer.lr, tune.optimizer.head_lr) == (1e-4, 1e-3)
    assert cfg.loss.label_smoothing == 0.0
    again = TrainingConfig(**cfg.model_dump(mode="json"))  # a resolved config reads back as the same fit
    assert again == cfg
    with pytest.raises(ValueError, match="epochs: 1 leaves none to fine-tune. Write epochs of at least 2"):
        TrainingConfig(recipe="probe_finetune", epochs=1)


@pytest.mark.parametrize("stage", [{"kind": "probe", "epochs": 3}, {"kind": "probe", "freeze": "none"}])
def test_a_probe_stage_is_one_epoch_on_a_frozen_backbone(stage):
    with pytest.raises(ValueError, match="a probe stage .* takes epochs: 1 and freeze: backbone"):
        TrainingConfig(stages=[stage])


def test_new_probe_keys_at_their_defaults_leave_the_config_fingerprint_as_it_was(monkeypatch):
    from medclf.config import Config, config_fingerprint, parse_config

    def study(**training):
        return parse_config({"data": {"source": {"type": "synthetic"}}, "training": training})

    staged = study(stages=[{"epochs": 2, "freeze": "backbone"}, {"epochs": 1}])
    now = {"plain": config_fingerprint(study()), "staged": config_fingerprint(staged)}
    real_dump = Config.model_dump

    def dump_before_the_keys(self, **kw):  # the schema as it was: no training.probe, no stage kind
        data = real_dump(self, **kw)
        data["training"].pop("probe")
        for stage in data["training"]["stages"]:
            stage.pop("kind")
        return data

    monkeypatch.setattr(Config, "model_dump", dump_before_the_keys)
    assert {"plain": config_fingerprint(study()), "staged": config_fingerprint(staged)} == now
    monkeypatch.undo()
    assert config_fingerprint(study(probe={"cs": 20})) != now["plain"]  # a written value is part of the fit
    assert config_fingerprint(study(stages=[{"kind": "probe"}, {"epochs": 1}])) != now["staged"]


def test_probe_finetune_keeps_the_probe_when_fine_tuning_destroys_it():
    x, y = _noisy_toy()
    snapshots = {}

    class Snapshot(loop.Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            snapshots[epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    cfg = _cfg(recipe="probe_finetune", stages=[{"kind": "probe"}, {"epochs": 2, "lr": 10.0}])
    trainer = _trainer(cfg, callbacks=[Snapshot()])
    result = trainer.fit(x[:120], y[:120], x[120:], y[120:])
    assert [(h["epoch"], h["stage"]) for h in result.history] == [(1, 0), (2, 1), (3, 1)]
    probe_loss = result.history[0]["val_loss"]
    assert all(h["val_loss"] > probe_loss for h in result.history[1:])  # lr 10 ruins the probe's head
    assert not all(torch.equal(snapshots[3][k], snapshots[1][k]) for k in snapshots[1])  # the last epoch moved
    assert result.best_epoch == 1
    final = trainer.model.state_dict()
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)  # the probe's weights, every tensor
    assert trainer.trainable_per_stage[0] < trainer.trainable_per_stage[1]  # stage 0 trained the head only
