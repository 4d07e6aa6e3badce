"""Tests for medclf.training.feature_cache: hits compute nothing, a changed backbone, data or preprocessing misses,
the head's weights do not matter, damaged entries are recomputed with a warning, writes are atomic."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medclf.config import ModelConfig
from medclf.models import build_model
from medclf.training import feature_cache
from medclf.training.feature_cache import cached_features, feature_key, module_state_names

FEATURES = np.arange(24, dtype=np.float32).reshape(6, 4) / 7


@pytest.fixture(autouse=True)
def _zeroed_counters() -> None:
    feature_cache.STATS.reset()


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=3, size_hw=(16, 16))


def head_names(model) -> set[str]:
    return module_state_names(model, model.head_module())


def key_of(model, *, data: str = "files-a", spec: str = "16x16-c1-resize") -> dict:
    return feature_key(model, data_fingerprint=data, image_spec=spec, exclude=head_names(model))


class Counting:
    """A ``compute`` that returns ``FEATURES`` (or ``value``) and counts its calls."""

    def __init__(self, value: np.ndarray = FEATURES) -> None:
        self.value, self.n_calls = value, 0

    def __call__(self) -> np.ndarray:
        self.n_calls += 1
        return self.value.copy()


def entry(cache_dir: Path, suffix: str) -> Path:
    (path,) = (cache_dir / "features").glob(f"*{suffix}")
    return path


def test_a_hit_returns_the_same_array_without_computing(tmp_path: Path, model) -> None:
    compute = Counting()
    first = cached_features(key_of(model), compute, cache_dir=tmp_path)
    second = cached_features(key_of(model), compute, cache_dir=tmp_path)
    assert compute.n_calls == 1
    np.testing.assert_array_equal(second, FEATURES)
    assert second.dtype == np.float32 and second.shape == first.shape
    assert (feature_cache.STATS.n_hits, feature_cache.STATS.n_misses) == (1, 1)
    index = json.loads(entry(tmp_path, ".json").read_text())
    assert index["key"]["data"] == "files-a" and index["shape"] == [6, 4]
    assert "n_classes" not in index["key"]["model"] and index["key"]["model"]["architecture"] == "test_resnet"


@pytest.mark.parametrize("change", ["backbone", "buffer", "data", "spec"])
def test_a_changed_backbone_data_or_preprocessing_misses(tmp_path: Path, model, change: str) -> None:
    cached_features(key_of(model), Counting(), cache_dir=tmp_path)
    kwargs = {"data": "files-b"} if change == "data" else {"spec": "32x32-c1-resize"} if change == "spec" else {}
    with torch.no_grad():
        if change == "backbone":
            model.net.conv1[0].weight[0, 0, 0, 0] += 1e-3
        elif change == "buffer":  # BatchNorm statistics change the features as much as weights do
            model.net.conv1[1].running_mean[0] += 1e-3
    other = Counting(FEATURES + 1)
    np.testing.assert_array_equal(cached_features(key_of(model, **kwargs), other, cache_dir=tmp_path), FEATURES + 1)
    assert other.n_calls == 1 and feature_cache.STATS.n_misses == 2
    assert len(list((tmp_path / "features").glob("*.npy"))) == 2


def test_changing_only_the_heads_weights_is_a_hit(tmp_path: Path, model) -> None:
    before = key_of(model)
    cached_features(before, Counting(), cache_dir=tmp_path)
    with torch.no_grad():
        model.head_module().weight.normal_()
        model.head_module().bias.fill_(3.0)
    assert key_of(model) == before
    compute = Counting(FEATURES + 1)
    np.testing.assert_array_equal(cached_features(key_of(model), compute, cache_dir=tmp_path), FEATURES)
    assert compute.n_calls == 0


def test_without_excluding_the_head_its_weights_would_change_the_key(model) -> None:
    """The exclusion is what makes the head-only change a hit (so the test above can fail)."""
    before = feature_key(model, data_fingerprint="d", image_spec="s", exclude=set())
    with torch.no_grad():
        model.head_module().bias.fill_(3.0)
    assert feature_key(model, data_fingerprint="d", image_spec="s", exclude=set()) != before
    assert head_names(model) == {"net.fc.weight", "net.fc.bias"}


def test_an_unknown_exclusion_is_refused(model) -> None:
    with pytest.raises(ValueError, match=r"does not have: \['fc.weight'\]"):
        feature_key(model, data_fingerprint="d", image_spec="s", exclude={"fc.weight"})


@pytest.mark.parametrize("damage", ["truncate", "flip", "index"])
def test_a_damaged_entry_is_recomputed_with_a_warning(tmp_path: Path, model, damage: str) -> None:
    cached_features(key_of(model), Counting(), cache_dir=tmp_path)
    array_path, index_path = entry(tmp_path, ".npy"), entry(tmp_path, ".json")
    raw = array_path.read_bytes()
    if damage == "truncate":
        array_path.write_bytes(raw[: len(raw) - 10])
    elif damage == "flip":  # same shape and dtype, one value changed: only the checksum tells
        array_path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0x55]))
    else:
        index_path.write_text("{not json")
    compute = Counting()
    with pytest.warns(RuntimeWarning, match="feature cache entry .* computed again and the entry rewritten"):
        np.testing.assert_array_equal(cached_features(key_of(model), compute, cache_dir=tmp_path), FEATURES)
    assert compute.n_calls == 1 and feature_cache.STATS.n_repaired == 1
    assert array_path.read_bytes() == raw  # rewritten: the next call is a hit
    cached_features(key_of(model), compute, cache_dir=tmp_path)
    assert compute.n_calls == 1


def test_an_exception_inside_compute_writes_nothing(tmp_path: Path, model) -> None:
    def failing() -> np.ndarray:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_features(key_of(model), failing, cache_dir=tmp_path)
    assert not (tmp_path / "features").exists() or list((tmp_path / "features").iterdir()) == []
    assert feature_cache.STATS.n_misses == 0


def test_a_failed_write_leaves_no_partial_entry(tmp_path: Path, model, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_save(handle, array, allow_pickle: bool) -> None:
        handle.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feature_cache.np, "save", half_save)
    with pytest.warns(RuntimeWarning, match="could not write the feature cache .* the disk is full"):
        features = cached_features(key_of(model), Counting(), cache_dir=tmp_path)
    np.testing.assert_array_equal(features, FEATURES)  # the run goes on with the computed features
    assert list((tmp_path / "features").iterdir()) == []  # no partial .npy, no temporary, no index


def test_a_pickled_entry_is_never_unpickled(tmp_path: Path, model) -> None:
    cached_features(key_of(model), Counting(), cache_dir=tmp_path)
    array_path = entry(tmp_path, ".npy")
    np.save(array_path, np.array([{"payload": 1}], dtype=object), allow_pickle=True)
    with pytest.warns(RuntimeWarning, match="computed again"):
        np.testing.assert_array_equal(cached_features(key_of(model), Counting(), cache_dir=tmp_path), FEATURES)
    assert np.load(array_path, allow_pickle=False).dtype == np.float32
