"""Loading a dataset: a source's listing (:mod:`medclf.data.layouts`) decoded through the cache
(:mod:`medclf.data.cache`), with its fingerprint and duplicate audit; and the image files that prediction
inputs name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medclf.config import DataConfig
from medclf.data.cache import CACHE_VERSION, load_images, pixel_checksums
from medclf.data.classes import apply_class_order
from medclf.data.csv_rows import csv_image_path, read_csv_rows
from medclf.data.dataset import ImageSet, Preprocessing, small_image_mask
from medclf.data.decode import IMAGE_EXTENSIONS, is_image_file
from medclf.data.layouts import LAYOUTS, SourceListing
from medclf.data.layouts.base import image_files, require_labels_in_train
from medclf.data.patients import fill_patient_ids
from medclf.errors import DataError

__all__ = [
    "dataset_fingerprint",
    "find_duplicates",
    "list_image_files",
    "load_dataset",
    "maps_from_disk",
    "physical_memory",
    "preprocessing_from_config",
]


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


def physical_memory() -> int:
    """The machine's physical memory in bytes (0 when the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not POSIX, or the names are unknown
        return 0


def maps_from_disk(cfg: DataConfig, n_images: int) -> bool:
    """Whether ``data.memory`` has a file source's ``n_images`` decoded images memory-mapped from the cache.

    ``auto`` maps when the decoded set (N x C x H x W bytes) exceeds ``data.memory_share`` of physical memory.
    """
    if cfg.memory != "auto":
        return cfg.memory == "mmap"
    n_bytes = n_images * cfg.channels * cfg.size_hw[0] * cfg.size_hw[1]
    total = physical_memory()
    return total > 0 and n_bytes > cfg.memory_share * total


def load_dataset(cfg: DataConfig) -> ImageSet:
    """Load, decode (through the on-disk cache) and audit the dataset a data config describes.

    Args:
        cfg: the ``data`` section of a study config.

    Returns:
        The ImageSet, with its fingerprint and its groups of byte-identical duplicates filled in.

    Raises:
        DataError: the source is missing, malformed, has fewer than two classes, or holds an unreadable image.
        ConfigError: ``cfg.source.type`` names no registered layout; ``cfg.classes`` does not name exactly the
            data's classes; ``cfg.positive_class`` is not a class or the task is not two-class single-label.
    """
    prep = preprocessing_from_config(cfg)
    layout = LAYOUTS.get(cfg.source.type)
    # data.classes / data.positive_class, for every layout: labels, fingerprint and outputs follow this order
    listing = apply_class_order(layout.list_source(cfg.source, prep), cfg)
    listing = fill_patient_ids(listing, mode=cfg.patient_ids, patient_folder_depth=layout.patient_folder_depth)
    skipped: list[tuple[str, str]] = []
    if listing.files is not None:
        # the same source, later edited, reuses the cached rows of its unchanged files
        lineage = f"{cfg.source.type}:{getattr(cfg.source, 'path', listing.root)}"
        cached = load_images(
            listing.files, prep, cache_dir=cfg.cache_dir, lineage=lineage, on_bad_image=cfg.on_bad_image,
            mmap=maps_from_disk(cfg, len(listing.files)),
        )
        images, digests = cached.images, cached.digests
        checksums, sizes = cached.checksums, cached.sizes  # verified against the cache's checksums
        if cached.failed:
            bad = {i for i, _ in cached.failed}
            skipped = [(listing.ids[i], reason) for i, reason in cached.failed]  # ids: never absolute paths
            listing = listing.subset([i for i in range(len(listing.ids)) if i not in bad])
            _require_after_skip(listing, [path for path, _ in skipped])
    else:  # array sources (npz, synthetic) are built in memory, whatever data.memory says
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
        duplicates=find_duplicates(listing.ids, digests, fold_ids=listing.fold_ids),
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
        require_labels_in_train(where, listing.class_names, listing.labels, listing.splits)
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


def find_duplicates(
    ids: Sequence[str], digests: Sequence[str], *, fold_ids: Sequence[int] | None = None
) -> list[list[str]]:
    """Groups of ids with identical content digests, each in dataset order, groups ordered by first member.

    With predefined fold folders (``fold_ids``), every fold holds each image once by design, so entries of
    different folds with identical content are one image seen through several folds, not copies: only entries
    of one fold are grouped, and of one content's groups in several folds the largest (on a tie, the one met
    first) stands for them all. A real copy is then counted once, not once per fold.
    """
    folds = [0] * len(ids) if fold_ids is None else list(fold_ids)
    by_content: dict[tuple[int, str], list[str]] = {}
    for id_, digest, fold in zip(ids, digests, folds, strict=True):
        by_content.setdefault((fold, digest), []).append(id_)
    largest: dict[str, list[str]] = {}
    for (_, digest), group in by_content.items():
        if len(group) > len(largest.get(digest, ())):
            largest[digest] = group
    position = {id_: k for k, id_ in enumerate(ids)}
    return sorted((g for g in largest.values() if len(g) > 1), key=lambda g: position[g[0]])


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
            found = image_files(path)
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
