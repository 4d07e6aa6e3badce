"""Tests for medclf.data.dataset: how much preprocessing enlarges an image, and which images count as small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medclf.data import Preprocessing, load_dataset
from medclf.data.dataset import SMALL_IMAGE_FACTOR, small_image_mask


def test_upscale_factor_is_the_larger_side_ratio_when_stretched_and_the_smaller_when_padded() -> None:
    sizes = np.array([[64, 64], [32, 128], [128, 256], [10, 20]])
    stretch = Preprocessing(size_hw=(64, 64), channels=1, resize="resize")
    pad = Preprocessing(size_hw=(64, 64), channels=1, resize="pad")
    np.testing.assert_allclose(stretch.upscale_factors(sizes), [1.0, 2.0, 0.5, 6.4])
    np.testing.assert_allclose(pad.upscale_factors(sizes), [1.0, 0.5, 0.25, 3.2])


def test_small_means_enlarged_more_than_the_factor_and_unknown_sizes_are_not_small() -> None:
    prep = Preprocessing(size_hw=(128, 128), channels=1)
    sizes = np.array([[64, 64], [63, 128], [28, 28], [0, 0], [256, 256]])
    assert SMALL_IMAGE_FACTOR == 2.0
    assert small_image_mask(sizes, prep).tolist() == [False, True, True, False, False]


@pytest.fixture
def mixed_tree(tmp_path: Path, img) -> Path:
    """root/<class>/: two 16x16 images and two 6x6 ones (more than 2x smaller than a 16 px image_size)."""
    root = tmp_path / "mixed"
    img.write(root / "a" / "big.png", img.gradient(16, 16, seed=1))
    img.write(root / "a" / "tiny.png", img.gradient(6, 6, seed=2))
    img.write(root / "b" / "big.png", img.gradient(16, 16, seed=3))
    img.write(root / "b" / "wide.png", img.gradient(6, 40, seed=4))  # stretched 2.7x in height
    return root


def test_small_images_of_a_folder_are_listed_also_after_a_cached_load(mixed_tree: Path, make_config) -> None:
    config = make_config({"type": "folder", "path": str(mixed_tree)}, image_size=16)
    for _ in range(2):  # the second load is a cache hit: the original sizes come from the cache entry
        data = load_dataset(config)
        assert data.small_images == ["a/tiny.png", "b/wide.png"]
        assert data.original_sizes.tolist() == [[16, 16], [6, 6], [16, 16], [6, 40]]
    summary = data.small_images_summary(limit=1)
    assert summary == {"count": 2, "factor": 2.0, "first": ["a/tiny.png"]}


def test_padding_keeps_a_wide_strip_from_counting_as_small(mixed_tree: Path, make_config) -> None:
    data = load_dataset(make_config({"type": "folder", "path": str(mixed_tree)}, image_size=16, resize="pad"))
    assert data.small_images == ["a/tiny.png"]  # the strip is shrunk to fit 16 px wide, not enlarged


def test_arrays_far_smaller_than_image_size_are_all_small(tmp_path: Path, make_config) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mnist.npz", train_images=rng.integers(0, 256, (4, 7, 7), dtype=np.uint8),
             train_labels=np.array([0, 1, 0, 1]), test_images=rng.integers(0, 256, (2, 16, 16), dtype=np.uint8),
             test_labels=np.array([0, 1]))
    data = load_dataset(make_config({"type": "npz", "path": str(tmp_path / "mnist.npz")}, image_size=16))
    assert data.small_images == ["train/0", "train/1", "train/2", "train/3"]
    assert data.original_sizes.tolist() == [[7, 7]] * 4 + [[16, 16]] * 2
