"""Data layouts: how a source (a folder tree, a CSV manifest, an npz, the phantom generator) becomes an ImageSet.

Each layout is a plain function registered in :data:`LAYOUTS` under the ``data.source.type`` a user writes. It
lists what the source holds (a :class:`SourceListing`: image files still to decode, or arrays already at the
preprocessing's size); :func:`load_dataset` decodes files through the cache (:mod:`medclf.data.cache`) and adds
the fingerprint and the duplicate audit.

Every file layout skips hidden entries (names starting with ".", ``__MACOSX``, ``Thumbs.db``, ``desktop.ini``)
and files whose extension is not an image's, and orders images by their id, the POSIX path relative to the root.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medclf.config import (
    DataConfig,
    FolderSource,
    NpzSource,
    SplitsSource,
    SyntheticSource,
)
from medclf.data.cache import CACHE_VERSION, load_images, pixel_checksums
from medclf.data.csv_rows import csv_image_path, read_csv_rows
from medclf.data.dataset import SPLITS, ImageSet, Preprocessing, small_image_mask
from medclf.data.decode import IMAGE_EXTENSIONS, is_image_file, resize_array
from medclf.data.patients import fill_patient_ids
from medclf.errors import DataError
from medclf.registry import Registry

__all__ = [
    "LAYOUTS",
    "SourceListing",
    "dataset_fingerprint",
    "find_duplicates",
    "list_image_files",
    "load_dataset",
    "preprocessing_from_config",
]

_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})  # OS litter, compared lower-case
_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class SourceListing:
    """What a layout found, index-aligned: either ``files`` to decode or ``images`` already decoded.

    Attributes:
        labels: class index of each image.
        ids: POSIX path relative to ``root`` (files) or ``<split>/<index>`` (arrays).
        splits: "train", "val" or "test" for each image.
        class_names: the class of each label index.
        files: image files, for file layouts.
        images: (N, C, H, W) uint8 at the preprocessing's size, for array layouts.
        digests: sha256 of each image's source pixel bytes, for array layouts.
        groups: patient id of each image, when the source has them.
        root: the folder ids are relative to, for file layouts.
        studies: study id of each image, when the source has them.
        fold_ids: predefined fold folder of each entry (see :class:`ImageSet`).
        holdout_folds: a manifest's fold column (see :class:`ImageSet`).
        multilabel: ``labels`` holds one 0/1 list per image (one entry per class name).
        sizes: each image's own (height, width) before resizing, for array layouts.
    """

    labels: list[int]
    ids: list[str]
    splits: list[str]
    class_names: list[str]
    files: list[Path] | None = None
    images: np.ndarray | None = None
    digests: list[str] | None = None
    groups: list[str] | None = None
    root: Path | None = None
    studies: list[str] | None = None
    fold_ids: list[int] | None = None
    holdout_folds: list[int] | None = None
    multilabel: bool = False
    sizes: list[tuple[int, int]] | None = None

    def subset(self, keep: Sequence[int]) -> SourceListing:
        """The listing of the entries at positions ``keep``, in that order."""

        def pick(values: Any) -> Any:
            return None if values is None else [values[i] for i in keep]

        return SourceListing(
            labels=pick(self.labels), ids=pick(self.ids), splits=pick(self.splits), class_names=self.class_names,
            files=pick(self.files), images=None if self.images is None else self.images[list(keep)],
            digests=pick(self.digests), groups=pick(self.groups), root=self.root, studies=pick(self.studies),
            fold_ids=pick(self.fold_ids), holdout_folds=pick(self.holdout_folds), multilabel=self.multilabel,
            sizes=pick(self.sizes),
        )


Layout = Callable[[Any, Preprocessing], SourceListing]
LAYOUTS: Registry[Layout] = Registry("data layout")


def preprocessing_from_config(cfg: DataConfig) -> Preprocessing:
    """The :class:`Preprocessing` a data config asks for (size, channels, resize mode, intensity, volume slice)."""
    return Preprocessing(
        size_hw=tuple(cfg.size_hw),
        channels=cfg.channels,
        resize=cfg.resize,
        normalization=cfg.intensity.normalization,
        percentiles=tuple(cfg.intensity.percentiles),
        window=None if cfg.intensity.window is None else tuple(cfg.intensity.window),
        dicom_voi=cfg.intensity.dicom_voi,
        volume_axis=cfg.volume.axis,
        volume_slice=cfg.volume.slice,
    )


def load_dataset(cfg: DataConfig) -> ImageSet:
    """Load, decode (through the on-disk cache) and audit the dataset a data config describes.

    Args:
        cfg: the ``data`` section of a study config.

    Returns:
        The ImageSet, with its fingerprint and its groups of byte-identical duplicates filled in.

    Raises:
        DataError: the source is missing, malformed, has fewer than two classes, or holds an unreadable image.
        ConfigError: ``cfg.source.type`` names no registered layout.
    """
    prep = preprocessing_from_config(cfg)
    listing = LAYOUTS.get(cfg.source.type)(cfg.source, prep)
    listing = fill_patient_ids(listing, mode=cfg.patient_ids, layout=cfg.source.type)
    skipped: list[tuple[str, str]] = []
    if listing.files is not None:
        # the same source, later edited, reuses the cached rows of its unchanged files
        lineage = f"{cfg.source.type}:{getattr(cfg.source, 'path', listing.root)}"
        cached = load_images(
            listing.files, prep, cache_dir=cfg.cache_dir, lineage=lineage, on_bad_image=cfg.on_bad_image
        )
        images, digests = cached.images, cached.digests
        checksums, sizes = cached.checksums, cached.sizes  # verified against the cache's checksums
        if cached.failed:
            bad = {i for i, _ in cached.failed}
            skipped = [(listing.ids[i], reason) for i, reason in cached.failed]  # ids: never absolute paths
            listing = listing.subset([i for i in range(len(listing.ids)) if i not in bad])
            _require_after_skip(listing, [path for path, _ in skipped])
    else:
        images, digests = listing.images, listing.digests
        checksums, sizes = pixel_checksums(images), listing.sizes
    return ImageSet(
        images=images,
        labels=np.asarray(listing.labels, dtype=np.int64),
        ids=np.asarray(listing.ids, dtype=str),
        splits=np.asarray(listing.splits, dtype=str),
        class_names=list(listing.class_names),
        groups=None if listing.groups is None else np.asarray(listing.groups, dtype=str),
        fingerprint=dataset_fingerprint(digests, listing, prep, checksums=checksums),
        duplicates=find_duplicates(listing.ids, digests),
        root=None if listing.root is None else str(listing.root),
        studies=None if listing.studies is None else np.asarray(listing.studies, dtype=str),
        fold_ids=None if listing.fold_ids is None else np.asarray(listing.fold_ids, dtype=np.int64),
        holdout_folds=None if listing.holdout_folds is None else np.asarray(listing.holdout_folds, dtype=np.int64),
        skipped=skipped,
        original_sizes=None if sizes is None else np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
        small_images=[] if sizes is None else np.asarray(listing.ids)[small_image_mask(sizes, prep)].tolist(),
    )


def _require_after_skip(listing: SourceListing, skipped: list[str]) -> None:
    """After skipping bad files (``skipped``: their ids), every class must still have training images (else a
    DataError naming the first few skipped files)."""
    named = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
    where = f"after skipping {len(skipped)} unreadable files ({named}; data.on_bad_image: skip)"
    if listing.multilabel:
        _require_labels_in_train(where, listing.class_names, listing.labels, listing.splits)
        return
    train_labels = {label for label, split in zip(listing.labels, listing.splits) if split == "train"}
    missing = [name for k, name in enumerate(listing.class_names) if k not in train_labels]
    if missing:
        raise DataError(f"{where}, class {missing[0]!r} has no training images left; fix or replace its files")


def dataset_fingerprint(
    digests: Sequence[str], listing: SourceListing, prep: Preprocessing, *, checksums: Sequence[str]
) -> str:
    """sha256 (16 hex) of the source digests, the decoded pixels (``checksums``, one per image, see
    :func:`medclf.data.cache.pixel_checksums`), labels, splits, groups, class names and preprocessing.

    The pixels are in because they, not the source files, are what a model is trained on: a damaged cache or a
    decoder that changed with a library upgrade changes the fingerprint, so a resumed run refuses to mix folds.
    """
    h = hashlib.sha256()
    header = {"version": CACHE_VERSION, "prep": prep.key(), "classes": list(listing.class_names)}
    h.update(json.dumps(header).encode())
    groups = listing.groups if listing.groups is not None else [""] * len(digests)
    folds = listing.fold_ids or listing.holdout_folds or [""] * len(digests)
    rows = zip(digests, checksums, listing.labels, listing.splits, groups, folds, strict=True)
    for digest, pixels, label, split, group, fold in rows:
        label_text = ",".join(str(int(v)) for v in label) if listing.multilabel else str(int(label))
        fold_text = f"\t{fold}" if fold != "" else ""
        h.update(f"\n{digest}:{pixels}\t{label_text}\t{split}\t{group}{fold_text}".encode())
    return h.hexdigest()[:16]


def find_duplicates(ids: Sequence[str], digests: Sequence[str]) -> list[list[str]]:
    """Groups of ids with identical content digests, each in dataset order, groups ordered by first member."""
    by_digest: dict[str, list[str]] = {}
    for id_, digest in zip(ids, digests):
        by_digest.setdefault(digest, []).append(id_)
    return [group for group in by_digest.values() if len(group) > 1]


# ------------------------------------------------------------------------------------------- file walking
def _is_hidden(name: str) -> bool:
    """Whether a file or folder name is OS or tool litter, never data."""
    return name.startswith(".") or name.lower() in _IGNORED_NAMES


def _image_files(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, sorted by relative POSIX path, hidden entries pruned."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not _is_hidden(d)]  # in place: os.walk then skips them
        found += [Path(dirpath, f) for f in filenames if not _is_hidden(f) and is_image_file(Path(dirpath, f))]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _require_dir(path: Path, expected: str, key: str = "data.source.path") -> Path:
    """``path`` when it is a folder; otherwise a DataError naming it, the config key and the expected layout."""
    if not path.exists():
        raise DataError(f"the folder given as {key} does not exist; expected {expected}", path=path)
    if not path.is_dir():
        raise DataError(f"{key} must be a folder ({expected}), but this is a file", path=path)
    return path


def _require_file(path: Path, expected: str, key: str = "data.source.path") -> Path:
    if not path.exists():
        raise DataError(f"the file given as {key} does not exist; expected {expected}", path=path)
    if not path.is_file():
        raise DataError(f"{key} must be a file ({expected}), but this is a folder", path=path)
    return path


def _scan_classes(folder: Path) -> dict[str, list[Path]]:
    """``{class name: image files}`` for each class sub-folder of ``folder``; an empty class is a DataError."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p.name))
    by_class = {}
    for class_dir in classes:
        files = _image_files(class_dir)
        if not files:
            raise DataError(
                f"class folder {class_dir.name!r} holds no images ({' '.join(IMAGE_EXTENSIONS)}); add images "
                "or remove the folder",
                path=class_dir,
            )
        by_class[class_dir.name] = files
    return by_class


def _require_classes(class_names: Sequence[str], where: Path | str, expected: str) -> None:
    """At least two classes, or a DataError saying what was found and what a classification needs."""
    if len(class_names) < 2:
        found = f"only {class_names[0]!r}" if class_names else "none"
        raise DataError(
            f"a classification dataset needs at least 2 classes, found {len(class_names)} ({found}); "
            f"expected {expected}",
            path=where,
        )


def _require_labels_in_train(
    where: Path | str, class_names: Sequence[str], labels: Sequence[Sequence[int]], splits: Sequence[str],
    *, source: str = "",
) -> None:
    """Every label of a multi-label dataset has a positive image in train or val, else a DataError naming every
    label that has none; ``source`` says where the labels are, e.g. "in column 'labels'"."""
    y = np.asarray(labels, dtype=np.int64).reshape(len(labels), len(class_names))
    is_test = np.asarray(splits) == "test"
    outside_test, in_test = y[~is_test].sum(axis=0), y[is_test].sum(axis=0)
    missing = [k for k, n in enumerate(outside_test) if n == 0]
    if not missing:
        return
    one = len(missing) == 1
    names = ", ".join(f"{class_names[k]!r} ({int(in_test[k])} in test)" for k in missing)
    raise DataError(
        f"multi-label {'label' if one else 'labels'} {names}{' ' + source if source else ''} "
        f"{'has' if one else 'have'} no positive "
        f"image in train or val; a model cannot learn a label it never sees: add training images with "
        f"{'it' if one else 'them'} or remove {'it' if one else 'them'}",
        path=where,
    )


def _file_listing(
    root: Path, files: list[Path], labels: list[int], splits: list[str], class_names: list[str]
) -> SourceListing:
    """A listing of files ordered by id (POSIX path relative to ``root``)."""
    ids = [_relative_id(f, root) for f in files]
    order = sorted(range(len(files)), key=ids.__getitem__)
    return SourceListing(
        labels=[labels[i] for i in order],
        ids=[ids[i] for i in order],
        splits=[splits[i] for i in order],
        class_names=class_names,
        files=[files[i] for i in order],
        root=root,
    )


def _relative_id(path: Path, root: Path) -> str:
    """POSIX path relative to ``root``; for a file outside it (a manifest with ``allow_outside_paths``), the
    relative path that climbs out (``../scans/a.png``): stable while the two keep their places, and never an
    absolute path that would name the machine's folders in every output."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, root)).as_posix()


# ------------------------------------------------------------------------------------------ file layouts
@LAYOUTS.register("folder")
def folder_layout(source: FolderSource, prep: Preprocessing) -> SourceListing:
    """``root/<class>/<images, in any sub-folders>``; every image in split "train"."""
    expected = "a folder with one sub-folder of images per class (root/<class>/<image>)"
    root = _require_dir(source.path, expected)
    by_class = _scan_classes(root)
    class_names = sorted(by_class)
    if class_names and all(name.lower() in _SPLIT_ALIASES for name in class_names):
        raise DataError(
            f"the class folders are named like splits ({class_names}); for root/<split>/<class>/<image> "
            "set data.source.type to 'splits'",
            path=root,
        )
    _require_classes(class_names, root, expected)
    files = [f for name in class_names for f in by_class[name]]
    labels = [label for label, name in enumerate(class_names) for _ in by_class[name]]
    return _file_listing(root, files, labels, ["train"] * len(files), class_names)


@LAYOUTS.register("splits")
def splits_layout(source: SplitsSource, prep: Preprocessing) -> SourceListing:
    """``root/<split>/<class>/<images>``; train is required, val and test are used when present."""
    expected = "root/<split>/<class>/<image> with split folders named as data.source.train, .val and .test"
    root = _require_dir(source.path, expected)
    per_split: dict[str, dict[str, list[Path]]] = {}
    for split in SPLITS:
        names = getattr(source, split)
        folder = next((root / n for n in names if (root / n).is_dir()), None)
        if folder is not None:
            per_split[split] = _scan_classes(folder)
        elif split == "train":
            present = sorted(p.name for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name))
            raise DataError(
                f"no training split folder: looked for {names} (data.source.train), found folders {present}; "
                "set data.source.train to the name of the training folder",
                path=root,
            )
    class_names = sorted(set().union(*per_split.values()))
    _require_classes(class_names, root, expected)
    for split, by_class in per_split.items():
        unknown = sorted(set(by_class) - set(per_split["train"]))
        if unknown:
            raise DataError(
                f"class {unknown[0]!r} appears in the {split} split but not in train (train classes: "
                f"{sorted(per_split['train'])}); a model cannot learn a class it never sees: add training "
                "images of it or remove it",
                path=root,
            )
    files, labels, splits = [], [], []
    for split, by_class in per_split.items():
        for name, class_files in by_class.items():
            files += class_files
            labels += [class_names.index(name)] * len(class_files)
            splits += [split] * len(class_files)
    return _file_listing(root, files, labels, splits, class_names)


# ----------------------------------------------------------------------------------------- array layouts
@LAYOUTS.register("npz")
def npz_layout(source: NpzSource, prep: Preprocessing) -> SourceListing:
    """A MedMNIST ``.npz``: ``{train,val,test}_images`` (N, H, W[, C]) with ``{split}_labels`` (N,) or (N, 1)."""
    path = _require_file(source.path, "a MedMNIST-style .npz with train_images and train_labels")
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
    _require_classes(class_names[:n_classes], path, "labels with at least two distinct values")
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
    _require_labels_in_train(path, names, listing.labels, listing.splits, source="(columns of the *_labels arrays)")
    return listing


@LAYOUTS.register("synthetic")
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


# --------------------------------------------------------------------------------------------- prediction
def list_image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files that prediction inputs name, in order.

    Args:
        inputs: each an image file, a folder (searched recursively, sorted, hidden entries skipped) or a
            ``.csv`` whose ``path`` column (else its first column) lists images relative to the CSV's folder.

    Returns:
        The image files, input by input.

    Raises:
        DataError: an input does not exist, is not an image, folder or CSV, or names no image.
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise DataError("the input does not exist; give an image file, a folder of images or a .csv", path=path)
        if path.is_dir():
            found = _image_files(path)
        elif path.suffix.lower() == ".csv":
            header, rows = read_csv_rows(path)
            column = "path" if "path" in header else header[0]
            # the user names this list on the command line, and outputs echo the paths it gives: no folder rule
            found = [csv_image_path(path, line, row[column], allow_outside=True) for line, row in rows]
        elif is_image_file(path):
            found = [path]
        else:
            raise DataError(
                f"is not an image ({' '.join(IMAGE_EXTENSIONS)}), a folder or a .csv list of images", path=path
            )
        if not found:
            raise DataError(f"holds no images ({' '.join(IMAGE_EXTENSIONS)}) outside hidden folders", path=path)
        files += found
    return files


# The layouts of these modules register themselves in LAYOUTS on import (after everything above is defined).
from medclf.data import manifest, trees  # noqa: E402, F401, I001
