"""Sharding and gathering of data-parallel training, without a second process: one-process gloo groups.

The two-process run (torchrun, gloo) is tests/training/test_ddp.py.
"""

from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.distributed as dist

from medclf.config import ModelConfig, TrainingConfig
from medclf.models import build_model
from medclf.training import Trainer
from medclf.training import distributed as ddp


@contextmanager
def _one_process_group(store):
    """A gloo process group of one process (rank 0 of 1), left again on exit."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture()
def group(tmp_path):
    with _one_process_group(tmp_path / "store"):
        yield


def test_outside_a_group_one_process_holds_everything(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert ddp.world() == (1, 2)  # torchrun's environment, before joining
    assert not ddp.is_writer()
    assert not ddp.is_distributed()
    positions = torch.arange(10)
    assert ddp.shard(positions) is positions  # not joined: no shard, no gather, no wrapper
    probs = np.random.default_rng(0).random((4, 3))
    assert ddp.gather_probs(probs) is probs
    assert ddp.broadcast_object({"a": 1}) == {"a": 1}
    shared = torch.Generator()
    assert ddp.own_generator(shared, seed=0) is shared


def test_shards_are_disjoint_cover_the_batch_and_interleave_back():
    positions = np.arange(11) * 10
    parts = [positions[r::3] for r in range(3)]  # what ranks 0, 1, 2 take (shard)
    assert sorted(np.concatenate(parts)) == list(positions)
    assert [len(p) for p in parts] == [4, 4, 3]
    probs = [np.stack([p, p + 1], axis=1).astype(float) for p in parts]  # each rank's predictions of its rows
    whole = ddp.interleave(probs)
    np.testing.assert_array_equal(whole[:, 0], positions)
    np.testing.assert_array_equal(whole[:, 1], positions + 1)


def test_interleave_accepts_a_rank_with_nothing_to_predict():
    parts = [np.array([[0.2, 0.8]]), np.zeros((0, 0))]  # one validation image, two ranks
    np.testing.assert_array_equal(ddp.interleave(parts), [[0.2, 0.8]])


def test_collectives_of_a_one_process_group(group):
    assert ddp.is_distributed() and ddp.world() == (0, 1) and ddp.is_writer()
    positions = torch.arange(7)
    assert torch.equal(ddp.shard(positions), positions)
    probs = np.random.default_rng(0).random((7, 3))
    np.testing.assert_array_equal(ddp.gather_probs(probs), probs)
    assert ddp.broadcast_object({"folds": [1, 2]}) == {"folds": [1, 2]}
    assert float(ddp.all_mean(torch.tensor(2.5))) == 2.5
    ddp.barrier()


def _toy(n=48):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 60, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 2
    x[y == 1, :, 4:12, 4:12] += 150
    return x, y


def _fit(cfg):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=2)
    x, y = _toy()
    trainer = Trainer(model, cfg, class_names=["a", "b"], seed=0)
    return trainer, trainer.fit(x[:36], y[:36], x[36:], y[36:])


def test_a_fit_wrapped_in_ddp_on_one_process_is_the_plain_fit(tmp_path):
    """Wrap (per stage), shard, gathered validation, buffer sync and loss mean change nothing on one rank."""
    stages = [{"epochs": 1, "freeze": "backbone", "optimizer": {"lr": 0.01}}, {"epochs": 1}]
    cfg = TrainingConfig(stages=stages, batch_size=8, device="cpu", num_threads=1)
    plain, plain_fit = _fit(cfg)
    with _one_process_group(tmp_path / "store"):
        wrapped, fit = _fit(cfg)
    assert wrapped.train_model is wrapped.model  # the DDP wrapper is dropped after the fit
    assert [h["val_loss"] for h in fit.history] == [h["val_loss"] for h in plain_fit.history]
    assert [h["train_loss"] for h in fit.history] == [h["train_loss"] for h in plain_fit.history]
    for key, value in plain.model.state_dict().items():
        assert torch.equal(wrapped.model.state_dict()[key], value), key
    assert fit.trainable_per_stage[0] < fit.trainable_per_stage[1]  # stage 0 trained the head only


def test_a_fit_registers_ddp_when_a_group_is_joined(group, monkeypatch):
    wrapped = []
    monkeypatch.setattr("medclf.training.loop.wrap", lambda model: wrapped.append(model) or model)
    _fit(TrainingConfig(epochs=1, batch_size=8, device="cpu", num_threads=1))
    assert len(wrapped) == 1


def test_the_last_batch_keeps_two_images_per_process():
    from medclf.training.loop import _batches, _n_train_steps

    order = torch.arange(19)
    assert [len(b) for b in _batches(order, 8)] == [8, 8, 3]
    assert [len(b) for b in _batches(order, 8, min_last=4)] == [8, 8]  # 3 images cannot give 2 ranks 2 each
    assert _n_train_steps(19, 8) == 3 and _n_train_steps(19, 8, min_last=4) == 2
    assert _n_train_steps(17, 8) == 2 and len(_batches(torch.arange(17), 8)) == 2  # a lonely image, as before
