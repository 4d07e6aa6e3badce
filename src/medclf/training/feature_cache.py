"""The on-disk cache of a frozen backbone's pooled features: computed once per fold's images and weights.

A linear probe (issue 17) needs the features of the same images under the same frozen weights in every fold,
stage and rerun; computing them is a full forward pass, fitting the probe is not. An entry in
``<cache_dir>/features/`` is::

    <key>.npy    the features, as ``compute`` returned them (normally (N, D) float32)
    <key>.json   the key parts, the array's shape and dtype and the xxh3-64 checksum of its bytes

``key`` is the sha256 of the key parts (:func:`feature_key`: the backbone's weights, the model spec, the data's
fingerprint, the preprocessing and :data:`FEATURE_VERSION`), so changing any of them is a miss, while changing
only the final linear layer's weights (what the probe writes) is a hit. As in :mod:`medclf.data.cache`, entries
are written atomically (the array first, then its index, each renamed into place), and every read checks the
array against its index: an entry that is unreadable, truncated or damaged is recomputed with a warning and
rewritten, never trusted. A write that fails (read-only or full disk) costs time next run, never this one.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xxhash
from torch import nn

from medclf.atomic import atomic_write, remove_stale_temporaries
from medclf.data.cache import default_cache_dir
from medclf.data.rows import Rows
from medclf.training.device import Runtime

__all__ = ["FEATURE_VERSION", "STATS", "FeatureCacheStats", "backbone_digest", "cached_features", "feature_key",
           "module_state_names"]

# Bump when what a feature is changes (the hook's position, the precision): every old entry misses.
FEATURE_VERSION = 1


@dataclass
class FeatureCacheStats:
    """Counters since the last :meth:`reset`, summed over every :func:`cached_features` call of this process."""

    n_hits: int = 0  # features read back from the cache
    n_misses: int = 0  # features computed (no entry, or an unusable one)
    n_repaired: int = 0  # entries that existed but failed their check (recomputed with a warning)

    def reset(self) -> None:
        """Set every counter back to zero."""
        self.n_hits = self.n_misses = self.n_repaired = 0


STATS = FeatureCacheStats()


def module_state_names(model: nn.Module, module: nn.Module) -> set[str]:
    """The ``model.state_dict()`` keys of ``module``'s tensors (e.g. the final linear layer's, to exclude)."""
    for name, candidate in model.named_modules():
        if candidate is module:
            prefix = f"{name}." if name else ""
            return {prefix + key for key in module.state_dict()}
    raise ValueError(f"{type(module).__name__} is not a submodule of the model")  # a caller's bug, not a user's


def backbone_digest(model: nn.Module, *, exclude: set[str]) -> str:
    """sha256 (hex) of the names, shapes, dtypes and bytes of ``model``'s state_dict tensors not in ``exclude``."""
    state = model.state_dict()
    unknown = sorted(set(exclude) - state.keys())
    if unknown:  # a misspelt exclusion would silently key the cache on the head's weights
        raise ValueError(f"exclude names tensors the model does not have: {unknown}")
    digest = hashlib.sha256(f"medclf-features-v{FEATURE_VERSION}\n".encode())
    for name in sorted(state.keys() - set(exclude)):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}\n{tuple(tensor.shape)}\n{tensor.dtype}\n".encode())
        # the bytes through a uint8 view: numpy has no bfloat16, and hashing the view copies nothing
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def feature_key(model: nn.Module, *, data_fingerprint: str, image_spec: Any, exclude: set[str]) -> dict[str, Any]:
    """The key parts of the pooled features of ``model``'s backbone on one set of images.

    Args:
        model: the model whose features are cached (its weights, except ``exclude``, are part of the key).
        data_fingerprint: what identifies the images and their order (e.g. a digest of the files' digests).
        image_spec: the preprocessing that made the images (JSON-serialisable, e.g. ``Preprocessing.key()``).
        exclude: the state_dict keys of the layer whose input is the feature (:func:`module_state_names` of the
            final linear layer): the probe rewrites it, so it must not change the key.

    Returns:
        A JSON-serialisable dict for :func:`cached_features`.
    """
    spec = getattr(model, "spec", None)
    # the number of outputs is the final layer's business, not the features'
    model_spec = ({k: v for k, v in spec.items() if k != "n_classes"} if isinstance(spec, dict)
                  else {"module": f"{type(model).__module__}.{type(model).__qualname__}"})
    return {"version": FEATURE_VERSION, "backbone": backbone_digest(model, exclude=exclude), "model": model_spec,
            "data": data_fingerprint, "images": image_spec}


def cached_features(
    key_parts: dict[str, Any], compute: Callable[[], np.ndarray], *, cache_dir: Path | None = None
) -> np.ndarray:
    """The features keyed by ``key_parts``: read from ``<cache_dir>/features/``, else ``compute()``d and stored.

    Args:
        key_parts: JSON-serialisable parts of the key (normally :func:`feature_key`).
        compute: called on a miss; returns the features (no pickled objects).
        cache_dir: the cache folder; None means :func:`medclf.data.cache.default_cache_dir`.
    """
    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "features"
    remove_stale_temporaries(folder, recursive=False)  # left by a killed write (its pid is gone)
    canonical = json.dumps(key_parts, sort_keys=True, separators=(",", ":"))
    key = hashlib.sha256(canonical.encode()).hexdigest()
    array_path, index_path = folder / f"{key}.npy", folder / f"{key}.json"
    if array_path.exists() or index_path.exists():
        features = _read_entry(array_path, index_path, json.loads(canonical))
        if features is not None:
            STATS.n_hits += 1
            return features
        STATS.n_repaired += 1
        _warn(f"the feature cache entry {array_path} is missing, truncated, damaged or not of its key "
              f"({index_path.name}); the features are computed again and the entry rewritten")
    features = np.ascontiguousarray(compute())
    STATS.n_misses += 1
    index = {"key": json.loads(canonical), "shape": list(features.shape), "dtype": features.dtype.str,
             "checksum": xxhash.xxh3_64_hexdigest(features)}
    try:
        atomic_write(array_path, lambda f: np.save(f, features, allow_pickle=False))
        atomic_write(index_path, lambda f: f.write(json.dumps(index).encode()))  # last: it makes the entry valid
    except OSError as error:
        _warn(f"could not write the feature cache in {folder} ({error}); the features will be computed again "
              "next time. Set data.cache_dir or $MEDCLF_CACHE to a writable folder.")
    return features


def _read_entry(array_path: Path, index_path: Path, key_parts: Any) -> np.ndarray | None:
    """The cached array when its index is this key's and it has the index's shape, dtype and checksum."""
    try:
        index = json.loads(index_path.read_text())
        features = np.load(array_path, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # missing, unreadable, truncated, not UTF-8
        return None
    if not isinstance(index, dict) or index.get("key") != key_parts:
        return None
    if list(features.shape) != index.get("shape") or features.dtype.str != index.get("dtype"):
        return None
    return features if xxhash.xxh3_64_hexdigest(np.ascontiguousarray(features)) == index.get("checksum") else None


def _warn(message: str) -> None:
    """A RuntimeWarning on stderr (where the CLI shows it): the cache repaired itself, but the user should know."""
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def cached_probe_features(
    model: nn.Module, images: Rows, *, data_fingerprint: str, batch_size: int, runtime: Callable[[], Runtime],
    cache_dir: Path | None = None,
) -> Callable[[str, Rows], np.ndarray]:
    """A probe stage's ``(split, rows) -> features`` (``Trainer(probe_features=...)``) through this cache.

    The features of every row of ``images`` under the model's backbone as it is when the probe stage starts are
    computed once and stored: a frozen pretrained backbone gives every fold of a study (and every rerun) the same
    ones, so the other folds only read them; each call takes its rows. Rows of another array are computed afresh.
    ``runtime`` returns the fit's runtime (known once the fit has started).
    """
    from medclf.training.probe import final_linear, pooled_features

    def features(split: str, rows: Rows) -> np.ndarray:
        if rows.array is not images.array:
            return pooled_features(model, rows, batch_size=batch_size, runtime=runtime())
        key = feature_key(model, data_fingerprint=data_fingerprint, image_spec=list(images.shape[1:]),
                          exclude=module_state_names(model, final_linear(model)))
        every = cached_features(key, lambda: pooled_features(model, images, batch_size=batch_size, runtime=runtime()),
                                cache_dir=cache_dir)
        return every if rows.index is None else every[rows.index]

    return features
