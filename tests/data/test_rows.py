"""Rows: a batch gathered from a tensor, an array or a memory map is bit for bit ``tensor[positions]``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from medclf.data.rows import Rows


@pytest.fixture
def images(tmp_path):
    """The same (20, 2, 3, 4) uint8 images as a tensor, an ndarray and a read-only memmap."""
    array = np.random.default_rng(0).integers(0, 256, (20, 2, 3, 4), dtype=np.uint8)
    np.save(tmp_path / "images.npy", array)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    return {"tensor": torch.from_numpy(array.copy()), "ndarray": array, "memmap": mapped}


@pytest.mark.parametrize("kind", ["tensor", "ndarray", "memmap"])
def test_take_is_tensor_indexing_in_the_order_given(images, kind):
    reference = images["tensor"]
    positions = torch.tensor([7, 2, 19, 2, 0, 11])  # shuffled, with a repeat (an oversampled copy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it wraps a non-writable (read-only mapped) array
        batch = Rows(images[kind]).take(positions)
    assert batch.dtype == torch.uint8 and batch.shape == (6, 2, 3, 4)
    assert torch.equal(batch, reference[positions])
    batch[0] = 0  # a fresh tensor: writing into it leaves the source alone
    assert torch.equal(Rows(images[kind]).take([7]), reference[[7]])


@pytest.mark.parametrize("kind", ["tensor", "ndarray", "memmap"])
def test_take_through_an_index_and_a_subset(images, kind):
    reference = images["tensor"]
    index = np.array([15, 3, 8, 12, 1, 9])
    rows = Rows(images[kind], index=index)
    assert len(rows) == 6 and rows.shape == (6, 2, 3, 4)
    positions = np.array([4, 0, 5, 0])
    assert torch.equal(rows.take(positions), reference[index][positions])
    inner = rows.subset([5, 2, 1])
    assert inner.array is images[kind] and list(inner.index) == [9, 8, 3]
    assert torch.equal(inner.take(torch.tensor([2, 0])), reference[[3, 9]])


def test_of_wraps_arrays_and_keeps_rows(images):
    rows = Rows(images["memmap"])
    assert Rows.of(rows) is rows
    assert Rows.of(images["tensor"]).shape == (20, 2, 3, 4)
    assert rows.is_mapped and not Rows.of(images["ndarray"]).is_mapped
    assert Rows(np.asarray(images["memmap"])).is_mapped  # a plain view of the map reads from it too


def test_chunks_cover_every_row_in_order(images):
    rows = Rows(images["memmap"], index=np.arange(19, -1, -1))
    starts, batches = zip(*rows.chunks(size=8))
    assert starts == (0, 8, 16)
    assert torch.equal(torch.cat(batches), images["tensor"].flip(0))


def test_empty_positions_give_an_empty_batch(images):
    assert Rows(images["memmap"]).take([]).shape == (0, 2, 3, 4)


def test_bad_shapes_and_masks_are_refused(images):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        Rows(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(TypeError, match="boolean"):
        Rows(images["ndarray"]).take(np.ones(20, bool))
