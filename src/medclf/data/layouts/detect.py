"""Which data layout a path has, when that is unmistakable: the check of ``data.source.type`` against the disk
(:func:`medclf.experiments.validation.check_config`) and the guess of a bare ``medclf inspect PATH``.

Only a few directory listings are read, never the images. Every rule is conservative, because a false alarm
on a real class-per-folder set would refuse a valid study: a layout is reported only from names no class
folder of a real dataset has (``Fold<k>`` folders each holding a ``train`` folder; split folders only;
MURA-style ``<study>_positive``/``_negative`` study folders) or, for a class-per-folder tree, from class
folders that hold images directly and are named neither like splits nor like folds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from medclf.data.decode import is_image_file
from medclf.data.layouts.base import SPLIT_ALIASES, is_hidden, subdirs
from medclf.data.layouts.folds import FOLD_NAME

__all__ = ["LAYOUT_SHAPES", "LayoutMatch", "detect_layout", "fold_folders"]

# What each data.source.type reads, in the words of the layouts' own errors
LAYOUT_SHAPES = {
    "folder": "a folder with one sub-folder of images per class (root/<class>/<image>)",
    "splits": "a folder of split folders, each with one sub-folder per class (root/<split>/<class>/<image>)",
    "folds": "a folder of fold folders (root/Fold0 .. FoldN/{train,valid,test}/<class>/<image>)",
    "patients": "a patient/study tree (root/<split>/<body part>/<patient>/<study>_<label>/<image>)",
    "npz": "a MedMNIST-style .npz file",
    "csv": "a .csv manifest with one row per image",
}
_FILE_TYPES = {".npz": "npz", ".csv": "csv"}
_STUDY_LABELS = ("positive", "negative")  # MURA's study suffixes: names no class folder has
_STUDIES_LOOKED_AT = 20  # study folders a patients tree is recognised by (a listing, not a walk of the tree)
_ENTRIES_LOOKED_AT = 200  # entries of a folder scanned for an image directly inside it


@dataclass(frozen=True)
class LayoutMatch:
    """A layout found on disk: the ``data.source.type`` that reads it and what was seen, for a message."""

    type: str
    description: str


def detect_layout(path: Path) -> LayoutMatch | None:
    """The layout ``path`` unmistakably has, or None when it is missing or could be more than one.

    ``.npz`` and ``.csv`` files by their extension; folders: ``folds``, then ``patients``, ``splits`` and
    ``folder`` (the order matters: a patients tree also has split folders).
    """
    path = Path(path)
    if path.is_file():
        kind = _FILE_TYPES.get(path.suffix.lower())
        return None if kind is None else LayoutMatch(kind, f"a {path.suffix.lower()} file")
    if not path.is_dir():
        return None
    children = subdirs(path)
    for detector in (_folds, _patients, _splits, _class_folders):
        found = detector(children)
        if found is not None:
            return found
    return None


def _folds(children: list[Path]) -> LayoutMatch | None:
    """``Fold<k>`` folders (at least two), each with a train folder."""
    folds = sorted((int(m.group(1)), p) for p in children if (m := FOLD_NAME.match(p.name)))
    if len(folds) < 2:
        return None
    order = ("train", "val", "test")
    splits = [sorted((s.name for s in subdirs(p) if s.name.lower() in SPLIT_ALIASES),
                     key=lambda name: order.index(SPLIT_ALIASES[name.lower()])) for _, p in folds]
    if not all(any(SPLIT_ALIASES[s.lower()] == "train" for s in names) for names in splits):
        return None
    return LayoutMatch("folds", f"{folds[0][1].name}..{folds[-1][1].name}, each with {'/'.join(splits[0])}")


def _split_dirs(children: list[Path]) -> dict[str, Path] | None:
    """``{split: folder}`` when every child is a split folder and one is train, else None."""
    if not children or not all(p.name.lower() in SPLIT_ALIASES for p in children):
        return None
    found = {SPLIT_ALIASES[p.name.lower()]: p for p in children}
    return found if "train" in found else None


def _patients(children: list[Path]) -> LayoutMatch | None:
    """Split folders whose train holds ``<body part>/<patient>/<study>_positive|negative`` folders of images."""
    splits = _split_dirs(children)
    if splits is None:
        return None
    studies = list(islice(
        (study for part in subdirs(splits["train"]) for patient in subdirs(part) for study in subdirs(patient)),
        _STUDIES_LOOKED_AT,
    ))
    if not studies or not all(s.name.rsplit("_", 1)[-1].lower() in _STUDY_LABELS and "_" in s.name for s in studies):
        return None
    names = "/".join(p.name for p in children)
    return LayoutMatch("patients", f"split folders {names}, then <body part>/<patient>/<study>_<positive|negative>")


def _splits(children: list[Path]) -> LayoutMatch | None:
    """Split folders only (train among them) whose train holds class folders of images."""
    splits = _split_dirs(children)
    if splits is None or not any(_holds_images(c) for c in subdirs(splits["train"])):
        return None
    return LayoutMatch("splits", f"split folders {'/'.join(p.name for p in children)}, each with class folders")


def _class_folders(children: list[Path]) -> LayoutMatch | None:
    """At least two folders named neither like splits nor like folds, each holding images directly."""
    if len(children) < 2 or any(p.name.lower() in SPLIT_ALIASES or FOLD_NAME.match(p.name) for p in children):
        return None
    if not all(_holds_images(p) for p in children):
        return None
    shown = ", ".join(p.name for p in children[:5]) + (", ..." if len(children) > 5 else "")
    return LayoutMatch("folder", f"class folders {shown} holding images")


def _holds_images(folder: Path) -> bool:
    """Whether an image file sits directly in ``folder`` (among its first entries)."""
    try:
        with os.scandir(folder) as entries:
            for entry in islice(entries, _ENTRIES_LOOKED_AT):
                if not is_hidden(entry.name) and entry.is_file() and is_image_file(entry.path):
                    return True
    except OSError:  # unreadable: not evidence of any layout
        return False
    return False


def fold_folders(path: Path) -> list[Path]:
    """The ``Fold<k>`` (``fold_k``...) folders directly in ``path``, as the ``folds`` layout reads them."""
    return [p for p in subdirs(path) if FOLD_NAME.match(p.name)]
