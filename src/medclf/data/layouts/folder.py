"""Class-per-folder layouts: ``folder`` (``root/<class>/<image>``) and ``splits``
(``root/<split>/<class>/<image>``)."""

from __future__ import annotations

from pathlib import Path

from medclf.config import FolderSource, SplitsSource
from medclf.data.dataset import SPLITS, Preprocessing
from medclf.data.layouts.base import (
    SPLIT_ALIASES,
    SourceListing,
    file_listing,
    require_classes,
    require_dir,
    scan_classes,
    subdirs,
)
from medclf.errors import DataError

__all__ = ["folder_layout", "splits_layout"]


def folder_layout(source: FolderSource, prep: Preprocessing) -> SourceListing:
    """``root/<class>/<images, in any sub-folders>``; every image in split "train"."""
    expected = "a folder with one sub-folder of images per class (root/<class>/<image>)"
    root = require_dir(source.path, expected)
    by_class = scan_classes(root)
    class_names = sorted(by_class)
    if class_names and all(name.lower() in SPLIT_ALIASES for name in class_names):
        raise DataError(
            f"the class folders are named like splits ({class_names}); for root/<split>/<class>/<image> "
            "set data.source.type to 'splits'",
            path=root,
        )
    require_classes(class_names, root, expected)
    files = [f for name in class_names for f in by_class[name]]
    labels = [label for label, name in enumerate(class_names) for _ in by_class[name]]
    return file_listing(root, files, labels, ["train"] * len(files), class_names)


def splits_layout(source: SplitsSource, prep: Preprocessing) -> SourceListing:
    """``root/<split>/<class>/<images>``; train is required, val and test are used when present."""
    expected = "root/<split>/<class>/<image> with split folders named as data.source.train, .val and .test"
    root = require_dir(source.path, expected)
    per_split: dict[str, dict[str, list[Path]]] = {}
    for split in SPLITS:
        names = getattr(source, split)
        folder = next((root / n for n in names if (root / n).is_dir()), None)
        if folder is not None:
            per_split[split] = scan_classes(folder)
        elif split == "train":
            present = [p.name for p in subdirs(root)]
            raise DataError(
                f"no training split folder: looked for {names} (data.source.train), found folders {present}; "
                "set data.source.train to the name of the training folder",
                path=root,
            )
    class_names = sorted(set().union(*per_split.values()))
    require_classes(class_names, root, expected)
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
    return file_listing(root, files, labels, splits, class_names)
