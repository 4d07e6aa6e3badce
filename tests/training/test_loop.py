
import math

import pytest
import torch

from medclf.config import ModelConfig, TrainingConfig
from medclf.models import build_model
from medclf.training import Callback, Trainer, batch_indices


def _toy(n=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 2
    x[y == 1, :, 4:12, 4:12] += 150  # a bright square marks class 1
    return x, y


def _fit(cfg, seed=0, callbacks=()):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=2)
    x, y = _toy()
    trainer = Trainer(model, cfg, class_names=["a", "b"], seed=seed, callbacks=callbacks)
    return trainer, trainer.fit(x[:120], y[:120], x[120:], y[120:])


def test_learns_a_separable_problem_and_logs_every_epoch():
    _, result = _fit(TrainingConfig(epochs=4, batch_size=16, device="cpu"))
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert {"train_loss", "val_loss", "val_accuracy", "val_auc_macro", "lr", "time_s"} <= set(result.history[0])
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert max(h["val_accuracy"] for h in result.history) >= 0.9


def test_same_seed_same_history_on_cpu():
    cfg = TrainingConfig(epochs=2, batch_size=16, device="cpu")
    _, a = _fit(cfg)
    _, b = _fit(cfg)
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]


def test_best_epoch_weights_are_restored():
    cfg = TrainingConfig(epochs=3, batch_size=16, device="cpu", monitor="val_accuracy")
    trainer, result = _fit(cfg)
    scores = [h["val_accuracy"] for h in result.history]
    assert result.best_epoch == scores.index(max(scores)) + 1
    assert result.best_score == max(scores)
    best_state = trainer.best.best_state
    assert all(torch.equal(v, best_state[k]) for k, v in trainer.model.state_dict().items())


def test_a_callback_can_stop_training():
    class StopAfterTwo(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            trainer.should_stop = epoch >= 2

    _, result = _fit(TrainingConfig(epochs=5, batch_size=16, device="cpu"), callbacks=[StopAfterTwo()])
    assert len(result.history) == 2


def test_training_num_threads_holds_for_the_fit_only():
    """torch's thread count is process-wide: a fit that kept it would slow (and change the sums of) every later
    fit in the process."""
    seen = []

    class Threads(Callback):
        def on_epoch_start(self, trainer, epoch):
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    target = 1 if before > 1 else 2
    _fit(TrainingConfig(epochs=1, batch_size=16, device="cpu", num_threads=target), callbacks=[Threads()])
    assert seen == [target] and torch.get_num_threads() == before


def test_batch_indices_cover_everything_and_drop_a_lonely_last_batch():
    assert sorted(torch.cat(batch_indices(10, 4)).tolist()) == list(range(10))
    shuffled = batch_indices(9, 4, generator=torch.Generator().manual_seed(0))
    assert [len(b) for b in shuffled] == [4, 4]
    assert [len(b) for b in batch_indices(9, 4)] == [4, 4, 1]


def test_history_csv_is_rewritten_after_every_epoch(tmp_path):
    from medclf.training import HistoryCSV

    seen = []

    class Peek(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            seen.append((tmp_path / "h.csv").read_text().count("\n"))

    _fit(TrainingConfig(epochs=2, batch_size=16, device="cpu"), callbacks=[HistoryCSV(tmp_path / "h.csv"), Peek()])
    assert seen == [2, 3]  # header + one line per finished epoch


def test_without_validation_data_the_last_epoch_is_kept():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=2)
    x, y = _toy()
    trainer = Trainer(model, TrainingConfig(epochs=3, batch_size=16, device="cpu"), class_names=["a", "b"], seed=0)
    result = trainer.fit(x[:120], y[:120], x[:0], y[:0])
    assert result.best_epoch == 3


@pytest.mark.parametrize("n", [1, 4, 5, 8, 9, 10, 17])
def test_step_count_matches_the_shuffled_batches(n):
    from medclf.training.loop import _n_train_steps

    assert _n_train_steps(n, 4) == len(batch_indices(n, 4, generator=torch.Generator().manual_seed(0)))


def test_a_fit_from_memory_mapped_rows_is_bit_identical_to_one_from_a_tensor(tmp_path):
    import numpy as np

    from medclf.data.rows import Rows

    x, y = _toy()
    np.save(tmp_path / "images.npy", x.numpy())
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    train, val, _ = torch.randperm(160, generator=torch.Generator().manual_seed(1)).split([48, 16, 96])
    cfg = TrainingConfig(epochs=1, batch_size=16, device="cpu", oversample="augment",
                         augmentation={"presets": ["hflip"]})
    fits = []
    for train_x, val_x in [(x[train], x[val]), (Rows(mapped, index=train.numpy()), Rows(mapped, index=val.numpy()))]:
        torch.manual_seed(0)
        model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=2)
        trainer = Trainer(model, cfg, class_names=["a", "b"], seed=0)
        fits.append((trainer.fit(train_x, y[train], val_x, y[val]), model.state_dict()))
    (tensor_fit, tensor_weights), (mapped_fit, mapped_weights) = fits
    drop_time = lambda history: [{k: v for k, v in h.items() if k != "time_s"} for h in history]  # noqa: E731
    assert drop_time(mapped_fit.history) == drop_time(tensor_fit.history)
    assert all(torch.equal(mapped_weights[k], v) for k, v in tensor_weights.items())


# ----------------------------------------------------------------------------------------- a probe stage
def _probe_fit(*, multilabel=False, probe_features=None, class_weights=None):
    torch.manual_seed(0)
    n_out = 2
    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=n_out)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 120, (160, 1, 16, 16), generator=g, dtype=torch.uint8), torch.arange(160) % 2
    x[y == 1, :, 4:12, 4:12] += 40  # a faint square: separable enough, never perfectly (a finite log-loss)
    if multilabel:  # label 0: the square; label 1: the square on odd rows of the first quarter (rarer, but there)
        y = torch.stack([y.float(), ((y == 1) & (torch.arange(len(y)) < 40)).float()], dim=1)
    cfg = TrainingConfig(recipe="linear_probe", batch_size=16, device="cpu", loss={"class_weights": class_weights})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics_fn = None
    if multilabel:
        from medclf.evaluation.multilabel import multilabel_metrics

        metrics_fn = lambda t, p: multilabel_metrics(t, p, class_names=["a", "b"])  # noqa: E731
    trainer = Trainer(model, cfg, class_names=["a", "b"], seed=0, multilabel=multilabel,
                      probe_features=probe_features, metrics_fn=metrics_fn)
    return trainer, trainer.fit(x[:120], y[:120], x[120:], y[120:]), before


def test_a_linear_probe_fit_is_one_logged_epoch_that_changes_only_the_last_linear_layer():
    from medclf.training.probe import final_linear

    trainer, result, before = _probe_fit()
    assert [(h["epoch"], h["stage"], h["step"]) for h in result.history] == [(1, 0, 0)]
    row = result.history[0]
    assert math.isnan(row["lr"]) and 0 < row["train_loss"] < math.log(2) and row["val_accuracy"] >= 0.9
    assert result.best_epoch == 1 and result.activation == "softmax"
    (fit,) = trainer.probe_fits
    assert fit.train_log_loss == pytest.approx(row["train_loss"]) and fit.inner_folds == 5  # the defaults
    head = final_linear(trainer.model)
    assert trainer.trainable_per_stage == [head.weight.numel() + head.bias.numel()]
    after = trainer.model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    names = {id(v): k for k, v in trainer.model.state_dict(keep_vars=True).items()}
    assert changed == {names[id(head.weight)], names[id(head.bias)]}  # BatchNorm statistics included: untouched
    assert all(p.requires_grad for p in trainer.model.parameters())  # saved as a plain, trainable model


def test_a_probe_stage_reads_features_through_the_injected_function():
    from medclf.training.probe import pooled_features

    calls = []

    def cached(split, rows):
        calls.append((split, len(rows)))
        return pooled_features(trainer_model[0], rows, batch_size=64, runtime=trainer_runtime[0])

    trainer_model, trainer_runtime = [], []

    class Grab(Callback):
        def on_fit_start(self, trainer):
            trainer_model.append(trainer.model)
            trainer_runtime.append(trainer.runtime)

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=2)
    x, y = _toy()
    cfg = TrainingConfig(recipe="linear_probe", batch_size=16, device="cpu")
    trainer = Trainer(model, cfg, class_names=["a", "b"], seed=0, probe_features=cached, callbacks=[Grab()])
    result = trainer.fit(x[:120], y[:120], x[120:], y[120:])
    assert calls == [("train", 120)] and result.history[0]["val_accuracy"] >= 0.9


def test_a_multilabel_probe_fits_each_label_and_balanced_weights_pass_through():
    trainer, result, _ = _probe_fit(multilabel=True, class_weights="balanced")
    assert result.activation == "sigmoid" and len(result.history) == 1
    assert result.history[0]["val_auc_macro"] > 0.8 and math.isfinite(result.history[0]["train_loss"])


def test_per_label_class_weights_are_refused_by_a_multilabel_probe():
    from medclf.errors import ConfigError

    with pytest.raises(ConfigError, match=r"class_weights: \[1.0, 3.0\] weighs the labels .* Use class_weights: "
                                          "balanced"):
        _probe_fit(multilabel=True, class_weights=[1.0, 3.0])


@pytest.mark.parametrize(("written", "expected"), [(None, None), ([1.0, 3.0], {0: 1.0, 1: 3.0}),
                                                   ("balanced", {0: 120 / (2 * 60), 1: 120 / (2 * 60)})])
def test_class_weights_reach_the_probe_as_the_loss_resolved_them(monkeypatch, written, expected):
    import medclf.training.probe as probe

    seen = []
    real = probe.fit_linear_probe
    monkeypatch.setattr(probe, "fit_linear_probe", lambda *a, **kw: seen.append(kw["class_weight"]) or real(*a, **kw))
    _probe_fit(class_weights=written)
    assert seen == [pytest.approx(expected) if expected else None]


# ------------------------------------------------------------------------------------- bf16 on CPU, compile
@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU with bf16 instructions: torch emulates bf16 autocast on any CPU, so the fit below is real anywhere."""
    from medclf.training import device

    monkeypatch.setattr(device, "_cpu_capabilities", lambda: {"cpu_name": "Test CPU", "avx512_bf16": True})


def test_a_bf16_fit_on_cpu_autocasts_without_a_scaler_and_keeps_float32_weights(monkeypatch, bf16_cpu):
    from medclf.training import loop

    seen = []  # (scaler enabled, autocast dtype of the forward, logits dtype) per step
    real_step = loop.train_step

    def step(model, objective, optimizer, scaler, x, y, runtime, **kw):  # kw: batch_step (None here)
        with runtime.autocast():
            logits_dtype = model(loop._to_input(x, runtime)).dtype
        seen.append((scaler.is_enabled(), logits_dtype))
        return real_step(model, objective, optimizer, scaler, x, y, runtime, **kw)

    monkeypatch.setattr(loop, "train_step", step)
    trainer, result = _fit(TrainingConfig(epochs=2, batch_size=16, device="cpu", precision="bf16"))
    assert trainer.runtime.amp_dtype == torch.bfloat16 and result.runtime["precision"] == "bfloat16"
    assert seen and set(seen) == {(False, torch.bfloat16)}  # bf16 keeps fp32's exponent range: no loss scaling
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in result.history)
    assert {v.dtype for v in trainer.model.state_dict().values() if v.is_floating_point()} == {torch.float32}


def test_validation_and_prediction_under_bf16_give_float32_probabilities(bf16_cpu):
    from medclf.training import predict_proba, resolve_runtime, tta_probabilities

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=2).eval()
    bf16 = resolve_runtime(TrainingConfig(device="cpu", precision="bf16"), model)
    fp32 = resolve_runtime(TrainingConfig(device="cpu"), model)
    x, _ = _toy(n=8)
    with torch.no_grad(), bf16.autocast():
        assert model(x.float() / 255).dtype == torch.bfloat16  # the network ran in bf16 ...
        assert tta_probabilities(model, x.float() / 255, activation="softmax").dtype == torch.float32  # ... not these
    low = predict_proba(model, x, batch_size=4, runtime=bf16)
    exact = predict_proba(model, x, batch_size=4, runtime=fp32)
    assert 0 < abs(low - exact).max() < 0.05 and abs(low.sum(axis=1) - 1).max() < 1e-6


@pytest.fixture
def compiled(monkeypatch):
    """torch.nn.Module.compile recorded, never run (a real compile builds C++ for minutes)."""
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **kw: calls.append((self, a, kw)))
    return calls


def test_training_compile_compiles_the_model_in_place_and_is_off_by_default(compiled):
    assert TrainingConfig().compile is False
    _fit(TrainingConfig(epochs=1, batch_size=16, device="cpu"))
    assert compiled == []
    trainer, _ = _fit(TrainingConfig(epochs=2, batch_size=16, device="cpu", compile=True))
    assert [(self, a, kw) for self, a, kw in compiled] == [(trainer.model, (), {})]  # once, before the first stage


def test_compile_comes_after_a_probe_stage_that_reads_features_through_a_hook(monkeypatch):
    history_when_compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self: history_when_compiled.append(len(trainer.history)))
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=2)
    x, y = _toy()
    cfg = TrainingConfig(recipe="probe_finetune", epochs=2, batch_size=16, device="cpu", compile=True)
    trainer = Trainer(model, cfg, class_names=["a", "b"], seed=0)
    trainer.fit(x[:120], y[:120], x[120:], y[120:])
    assert history_when_compiled == [1]  # the probe's epoch ran uncompiled; the fine-tuning stage compiled


def test_compile_refuses_a_probe_stage_after_an_sgd_stage():
    from medclf.errors import ConfigError

    cfg = TrainingConfig(compile=True, device="cpu", stages=[{"epochs": 1}, {"kind": "probe"}])
    with pytest.raises(ConfigError, match=r"^training.compile: true compiles the model before its first sgd stage.* "
                                          r"\(stage kinds here: sgd, probe\), or set training.compile: false$"):
        Trainer(build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=2), cfg, class_names=["a", "b"],
                seed=0)


def test_compile_at_its_default_leaves_the_config_fingerprint_as_it_was(monkeypatch):
    from medclf.config import Config, config_fingerprint, parse_config

    def study(**training):
        return parse_config({"data": {"source": {"type": "synthetic"}}, "training": training})

    now = config_fingerprint(study())
    real_dump = Config.model_dump

    def dump_before_the_key(self, **kw):  # the schema as it was: no training.compile
        data = real_dump(self, **kw)
        data["training"].pop("compile")
        return data

    monkeypatch.setattr(Config, "model_dump", dump_before_the_key)
    assert config_fingerprint(study()) == now
    monkeypatch.undo()
    assert config_fingerprint(study(compile=True)) != now  # compiled kernels change numerics: part of the fit
