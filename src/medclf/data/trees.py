"""Folder layouts of real medical datasets: predefined fold folders, and patient/study trees.

``folds``: ``root/Fold<k>/{train,valid,test}/<class>/<image>``; cross-validation uses exactly these folds, an
image that sits in several folds' folders is one entry per fold.

``patients``: ``root/<split>/<body part>/<patient>/<study>_<label>/<image>`` (the MURA layout, labels
``positive`` and ``negative``); the patient folder is the group, ``<body part>/<patient>/<study>`` the study.
"""

from __future__ import annotations

import re
from pathlib import Path

from medclf.config import FoldsSource, PatientsSource
from medclf.data.dataset import Preprocessing
from medclf.data.sources import (
    _SPLIT_ALIASES,
    LAYOUTS,
    SourceListing,
    _image_files,
    _is_hidden,
    _relative_id,
    _require_classes,
    _require_dir,
    _scan_classes,
)
from medclf.errors import DataError

__all__ = ["folds_layout", "patients_layout"]

_FOLD_NAME = re.compile(r"^fold[_\- ]?(\d+)$", re.IGNORECASE)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p.name))


@LAYOUTS.register("folds")
def folds_layout(source: FoldsSource, prep: Preprocessing) -> SourceListing:
    """``root/Fold<k>/<split>/<class>/<image>``: fold k trains on its train, picks epochs on its valid and
    is scored on its test folder (the fold's held-out part)."""
    expected = "root/Fold0 .. FoldN/{train,valid,test}/<class>/<image>"
    root = _require_dir(source.path, expected)
    fold_dirs = {int(m.group(1)): p for p in _subdirs(root) if (m := _FOLD_NAME.match(p.name))}
    if len(fold_dirs) < 2:
        raise DataError(
            f"found {len(fold_dirs)} fold folders (Fold0, Fold1, ...), cross-validation needs at least 2; "
            f"folders there: {[p.name for p in _subdirs(root)]}; expected {expected}",
            path=root,
        )
    entries: list[tuple[Path, str, str, int]] = []  # file, class, split, fold
    for k, fold_dir in sorted(fold_dirs.items()):
        split_dirs = {_SPLIT_ALIASES.get(p.name.lower()): p for p in _subdirs(fold_dir)}
        if "train" not in split_dirs:
            raise DataError(f"fold folder has no train folder; expected {expected}", path=fold_dir)
        for split, split_dir in split_dirs.items():
            if split is None:
                continue
            for name, files in _scan_classes(split_dir).items():
                entries += [(f, name, split, k) for f in files]
    class_names = sorted({name for _, name, _, _ in entries})
    _require_classes(class_names, root, expected)
    for k in fold_dirs:
        train_classes = {n for _, n, s, f in entries if f == k and s == "train"}
        absent = sorted({n for _, n, s, f in entries if f == k} - train_classes)
        if absent:
            raise DataError(
                f"class {absent[0]!r} appears in fold {k}'s evaluation folders but not in its train folder; a model "
                "cannot learn a class it never sees",
                path=fold_dirs[k],
            )
    entries.sort(key=lambda e: _relative_id(e[0], root))
    return SourceListing(
        labels=[class_names.index(n) for _, n, _, _ in entries],
        ids=[_relative_id(f, root) for f, _, _, _ in entries],
        splits=[s for _, _, s, _ in entries],
        class_names=class_names,
        files=[f for f, _, _, _ in entries],
        root=root,
        fold_ids=[k for _, _, _, k in entries],
    )


@LAYOUTS.register("patients")
def patients_layout(source: PatientsSource, prep: Preprocessing) -> SourceListing:
    """``root/<split>/<body part>/<patient>/<study>_<label>/<image>``; labels from the study folder suffix."""
    expected = "root/<split>/<body part>/<patient id>/<study>_<positive|negative>/<image>"
    root = _require_dir(source.path, expected)
    split_dirs = [(s, p) for p in _subdirs(root) if (s := _SPLIT_ALIASES.get(p.name.lower()))]
    if not any(s == "train" for s, _ in split_dirs):
        raise DataError(
            f"no train folder; found {[p.name for p in _subdirs(root)]}; expected {expected}", path=root
        )
    entries: list[tuple[Path, str, str, str, str]] = []  # file, label, split, patient, study
    for split, split_dir in split_dirs:
        for part_dir in _subdirs(split_dir):
            for patient_dir in _subdirs(part_dir):
                for study_dir in _subdirs(patient_dir):
                    label = _study_label(study_dir, expected)
                    study = f"{part_dir.name}/{patient_dir.name}/{study_dir.name}"
                    entries += [(f, label, split, patient_dir.name, study) for f in _image_files(study_dir)]
    class_names = sorted({e[1] for e in entries})
    _require_classes(class_names, root, expected)
    train_classes = {e[1] for e in entries if e[2] == "train"}
    absent = sorted(set(class_names) - train_classes)
    if absent:
        raise DataError(f"label {absent[0]!r} has studies outside train but none in train", path=root)
    entries.sort(key=lambda e: _relative_id(e[0], root))
    return SourceListing(
        labels=[class_names.index(e[1]) for e in entries],
        ids=[_relative_id(e[0], root) for e in entries],
        splits=[e[2] for e in entries],
        class_names=class_names,
        files=[e[0] for e in entries],
        root=root,
        groups=[e[3] for e in entries],
        studies=[e[4] for e in entries],
    )


def _study_label(study_dir: Path, expected: str) -> str:
    name = study_dir.name
    if "_" not in name or not name.rsplit("_", 1)[1]:
        raise DataError(
            f"study folder {name!r} does not end in _<label> (for example study1_positive); expected {expected}",
            path=study_dir,
        )
    return name.rsplit("_", 1)[1].lower()
