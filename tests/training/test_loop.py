
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
