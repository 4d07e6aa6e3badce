"""Array layouts: ``npz`` (a MedMNIST-style archive of image and label arrays) and ``synthetic`` (the phantom
generator). Their images are decoded already; they are resized here, and their ids are ``<split>/<index>``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from medclf.config import NpzSource, SyntheticSource
from medclf.data.dataset import SPLITS, Preprocessing
from medclf.data.decode import resize_array
from medclf.data.layouts.base import SourceListing, require_classes, require_file, require_labels_in_train
from medclf.errors import DataError

__all__ = ["npz_layout", "synthetic_layout"]


def npz_layout(source: NpzSource, prep: Preprocessing) -> SourceListing:
    """A MedMNIST ``.npz``: ``{train,val,test}_images`` (N, H, W[, C]) with ``{split}_labels`` (N,) or (N, 1)."""
    path = require_file(source.path, "a MedMNIST-style .npz with train_images and train_labels")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: _npz_array(data, key, path) for key in data.files}
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"is not a readable .npz archive ({error})", path=path) from None
    if "train_images" not in arrays or "train_labels" not in arrays:
        raise DataError(f"needs the arrays train_images and train_labels, has {sorted(arrays)}", path=path)
    parts = []
    for split in SPLITS:
        images, labels = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
        if (images is None) != (labels is None):
            raise DataError(f"has only one of {split}_images and {split}_labels; provide both or neither", path=path)
        if images is not None:
            parts.append((split, images, _npz_labels(path, split, labels, len(images))))
    if parts[0][2].ndim == 2:  # (N, L) 0/1: multi-label (MedMNIST's ChestMNIST)
        return _npz_multilabel(path, parts, source, prep)
    n_classes = 1 + max(int(p[2].max(initial=0)) for p in parts)
    class_names = list(source.class_names) if source.class_names is not None else [str(i) for i in range(n_classes)]
    if len(class_names) < n_classes:
        raise DataError(
            f"labels go up to {n_classes - 1} but data.source.class_names lists {len(class_names)} names "
            f"({class_names}); give one name per label 0..{n_classes - 1}",
            path=path,
        )
    require_classes(class_names[:n_classes], path, "labels with at least two distinct values")
    return _array_listing(parts, class_names, prep)


def _npz_array(data: Any, key: str, path: Path) -> np.ndarray:
    """One array of an open .npz; an object array is refused by name, since reading it would unpickle (run code)."""
    try:
        return data[key]
    except ValueError as error:
        if "allow_pickle" not in str(error):
            raise
        raise DataError(
            f"array {key!r} holds Python objects, and medclf never unpickles data (unpickling can run code). "
            "Save numeric arrays, e.g. np.savez(path, train_images=images.astype(np.uint8), train_labels=labels)",
            path=path,
        ) from None


def _npz_labels(path: Path, split: str, labels: np.ndarray, n_images: int) -> np.ndarray:
    """``{split}_labels`` as (N,) int64, checked: one non-negative integer per image."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim not in (1, 2) or (labels.ndim == 2 and not np.isin(labels, (0, 1)).all()):
        raise DataError(
            f"{split}_labels has shape {labels.shape}; expected (N,) or (N, 1) class indices, or (N, L) 0/1 "
            "multi-label targets",
            path=path,
        )
    if len(labels) != n_images:
        raise DataError(f"{split}_labels has {len(labels)} labels for {n_images} images", path=path)
    if not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
        raise DataError(f"{split}_labels must be non-negative integers, got dtype {labels.dtype}", path=path)
    return labels.astype(np.int64)


def _npz_multilabel(
    path: Path, parts: list[tuple[str, np.ndarray, np.ndarray]], source: NpzSource, prep: Preprocessing
) -> SourceListing:
    """A multi-label npz: every split's labels (N, L) 0/1 with the same L."""
    n_labels = parts[0][2].shape[1]
    if any(p[2].ndim != 2 or p[2].shape[1] != n_labels for p in parts):
        raise DataError(f"every split's labels must be (N, {n_labels}) 0/1 like train_labels", path=path)
    names = list(source.class_names) if source.class_names is not None else [str(i) for i in range(n_labels)]
    if len(names) != n_labels:
        raise DataError(f"data.source.class_names lists {len(names)} names for {n_labels} labels", path=path)
    listing = _array_listing([(s, images, np.zeros(len(images))) for s, images, _ in parts], names, prep)
    listing.labels = [row.tolist() for _, _, labels in parts for row in labels.astype(np.int64)]
    listing.multilabel = True
    require_labels_in_train(path, names, listing.labels, listing.splits, source="(columns of the *_labels arrays)")
    return listing


def synthetic_layout(source: SyntheticSource, prep: Preprocessing) -> SourceListing:
    """MRI-like head phantoms from :mod:`medclf.data.synthetic`; split "train", grouped by patient."""
    from medclf.data.synthetic import (
        make_phantoms,  # lazy: generator code is not needed by other layouts
    )

    phantoms = make_phantoms(
        n_patients=source.n_patients,
        slices_per_patient=source.slices_per_patient,
        image_size=source.image_size,
        seed=source.seed,
    )
    images = np.asarray(phantoms.images).transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C) for resize_array
    listing = _array_listing([("train", images, np.asarray(phantoms.labels))], list(phantoms.class_names), prep)
    listing.groups = [str(g) for g in phantoms.patient_ids]
    return listing


def _array_listing(
    parts: list[tuple[str, np.ndarray, np.ndarray]], class_names: list[str], prep: Preprocessing
) -> SourceListing:
    """A listing of decoded arrays from ``(split, images, labels)`` parts; digests are of the source pixels."""
    images, labels, ids, splits, digests, sizes = [], [], [], [], [], []
    for split, split_images, split_labels in parts:
        images.append(resize_array(split_images, prep))
        sizes += [(int(split_images.shape[1]), int(split_images.shape[2]))] * len(split_images)
        digests += [hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in split_images]
        labels += [int(x) for x in split_labels]
        ids += [f"{split}/{i}" for i in range(len(split_images))]
        splits += [split] * len(split_images)
    return SourceListing(
        labels=labels,
        ids=ids,
        splits=splits,
        class_names=class_names,
        images=np.concatenate(images),
        digests=digests,
        sizes=sizes,
    )
