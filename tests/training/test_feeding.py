"""Feeds: every way a batch reaches the training device gives Rows.take's batch, bit for bit.

The resident and pinned-buffer code runs on the CPU here by forcing its kind (the device is then the CPU); the
tests marked ``cuda`` run only where a GPU is present (the prepared device script runs them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medclf.config import ModelConfig, TrainingConfig
from medclf.data.augmentation import build_augmentation
from medclf.data.rows import Rows
from medclf.models import build_model
from medclf.training import Trainer, feeding, loop
from medclf.training.device import Runtime
from medclf.training.feeding import PinnedFeed, choose_feed, make_feed

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(params=["tensor", "ndarray", "memmap"])
def rows(request, tmp_path):
    """Rows 3..32 (in a shuffled index) of 40 random (2, 5, 6) uint8 images, held three ways."""
    array = np.random.default_rng(0).integers(0, 256, (40, 2, 5, 6), dtype=np.uint8)
    np.save(tmp_path / "x.npy", array)
    held = {"tensor": torch.from_numpy(array.copy()), "ndarray": array,
            "memmap": np.load(tmp_path / "x.npy", mmap_mode="r")}[request.param]
    return Rows(held, index=np.random.default_rng(1).permutation(40)[3:33])


def _batches(n, seed=0):
    """Shuffled batches of positions, one with a repeated position (an oversampled copy), one sorted, one of one."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [order[:8], torch.cat([order[8:12], order[8:10]]), order[12:20].sort().values, order[20:21], order[21:]]


def test_on_the_cpu_the_feed_is_rows_take(rows):
    feed = make_feed(rows, CPU)
    assert feed.kind == "host"
    for positions in _batches(len(rows)):
        assert torch.equal(feed.take(positions), rows.take(positions))


def test_the_resident_set_is_gathered_like_rows_take(rows, monkeypatch):
    monkeypatch.setattr(feeding, "CHUNK_BYTES", 7 * 60)  # 7 rows per chunk: the set is copied in 5 chunks
    feed = make_feed(rows, CPU, kind="resident")
    assert feed.kind == "resident" and feed.images.shape == rows.shape
    assert torch.equal(feed.images, rows.take(np.arange(len(rows))))
    for positions in _batches(len(rows)):
        assert torch.equal(feed.take(positions), rows.take(positions))
    assert torch.equal(feed.take(np.array([5, 0])), rows.take([5, 0]))  # numpy positions too


def test_the_pinned_buffers_are_gathered_like_rows_take_and_reused_in_turn(rows):
    feed = PinnedFeed(rows, torch.device("cpu"), pin=False)
    batches = _batches(len(rows))
    out = [feed.take(positions) for positions in batches]
    for positions, batch in zip(batches, out):
        assert torch.equal(batch, rows.take(positions))  # a later take never changed an earlier batch
    used = []
    for positions in torch.arange(len(rows)).split(5):  # same-sized batches: no buffer has to grow
        feed.take(positions)
        used.append(feed.buffers[feed.turn ^ 1].data_ptr())
    assert used[0] != used[1] and used[2:] == [used[0], used[1]] * 2  # two buffers, in turn
    big = torch.arange(len(rows)).flip(0)
    assert torch.equal(feed.take(big), rows.take(big))  # a larger batch grows its buffer
    assert len(feed.buffers[feed.turn ^ 1]) == len(rows)


def test_a_pinned_buffer_is_refilled_only_after_its_last_copy_completed(monkeypatch):
    """The CUDA ordering, with the event replaced by one that records when it was waited for."""
    log = []

    class Event:
        def __init__(self, buffer):
            self.buffer = buffer

        def synchronize(self):
            log.append(("wait", self.buffer))

    feed = PinnedFeed(Rows(torch.arange(10 * 4, dtype=torch.uint8).view(10, 1, 2, 2)), torch.device("cpu"), pin=False)
    monkeypatch.setattr(feeding, "_record", lambda device: Event(feed.turn))
    real_gather = feeding._gather_into
    monkeypatch.setattr(feeding, "_gather_into", lambda a, r, out: (log.append(("fill", feed.turn)),
                                                                    real_gather(a, r, out)))
    for positions in ([3, 1], [0, 2], [5, 4], [9, 8]):
        feed.take(positions)
    assert log == [("fill", 0), ("fill", 1), ("wait", 0), ("fill", 0), ("wait", 1), ("fill", 1)]


def test_choose_feed_keeps_the_set_on_the_gpu_only_when_it_fits_in_a_share_of_free_memory():
    gpu = torch.device("cuda")  # a device object only: free_bytes is given, so no CUDA call is made
    assert choose_feed(10**9, torch.device("cpu"), free_bytes=10**12) == "host"
    assert choose_feed(10**9, gpu, free_bytes=2 * 10**9) == "resident"
    assert choose_feed(10**9 + 1, gpu, free_bytes=2 * 10**9) == "pinned"
    assert choose_feed(10**9, gpu, free_bytes=4 * 10**9, share=0.2) == "pinned"


def test_the_pinned_gather_refuses_a_row_out_of_range():
    feed = PinnedFeed(Rows(np.zeros((4, 1, 2, 2), dtype=np.uint8)), torch.device("cpu"), pin=False)
    with pytest.raises(IndexError, match="row 4 is out of range for 4 rows"):
        feed.take([1, 4])


@pytest.fixture
def one_thread():
    """Tiny fits run fastest on one thread (no OpenMP hand-offs); the process's setting is restored after."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


@pytest.mark.parametrize("kind", ["resident", "pinned"])
def test_a_fit_through_a_forced_feed_is_the_fit_through_rows_take(kind, monkeypatch, one_thread):
    """The loop gathers through its feed: forcing either device-side kind changes no number of the fit."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (48, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(48) % 2
    cfg = TrainingConfig(epochs=2, batch_size=10, device="cpu")

    def fit():
        torch.manual_seed(0)
        model = build_model(ModelConfig(name="layers", layers=[{"type": "conv", "filters": 4}]), in_chans=1,
                            n_classes=2, size_hw=(8, 8))  # the loop is under test, not a network
        history = Trainer(model, cfg, class_names=["a", "b"], seed=0).fit(x, y, x[:0], y[:0]).history
        return [h["train_loss"] for h in history], [p.detach().clone() for p in model.parameters()]

    made = []
    reference = fit()
    monkeypatch.setattr(loop, "make_feed", lambda rows, runtime: made.append(kind) or make_feed(rows, runtime, kind=kind))
    losses, weights = fit()
    assert made == [kind] and losses == reference[0]
    assert all(torch.equal(a, b) for a, b in zip(weights, reference[1]))


# ------------------------------------------------------------------------------------------ on a GPU only
@cuda
@pytest.mark.parametrize("kind", ["resident", "pinned"])
def test_on_the_gpu_every_feed_gives_rows_take_on_the_device(rows, kind):
    runtime = Runtime(device=torch.device("cuda"), amp_dtype=None, channels_last=False)
    feed = make_feed(rows, runtime, kind=kind)
    if kind == "pinned":
        feed.take([0])
        assert feed.buffers[0].is_pinned()
    batches = [torch.randperm(len(rows))[:13] for _ in range(200)]  # many copies in flight back to back
    out = [feed.take(positions) for positions in batches]
    torch.cuda.synchronize()
    assert all(b.is_cuda and torch.equal(b.cpu(), rows.take(p)) for p, b in zip(batches, out))


@cuda
def test_on_the_gpu_augmentation_draws_what_it_draws_on_the_cpu():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for presets, exact in ((["hflip", "vflip"], True), (["basic"], False), (["intensity"], False)):
        augment = build_augmentation(presets, size_hw=(32, 32), channels=3)
        on_cpu = augment(x, torch.Generator().manual_seed(1))
        cuda_rng = torch.cuda.get_rng_state()
        on_gpu = augment(x.cuda(), torch.Generator().manual_seed(1)).cpu()
        assert torch.equal(torch.cuda.get_rng_state(), cuda_rng)  # dropout's generator left alone
        # the same draws; float arithmetic on the GPU may round a rare pixel (nearest sampling, jitter) otherwise
        assert torch.equal(on_cpu, on_gpu) if exact else (on_cpu == on_gpu).float().mean() > 0.99, presets
