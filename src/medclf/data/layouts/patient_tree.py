"""The ``patients`` layout: a patient and study tree, ``root/<split>/<body part>/<patient>/<study>_<label>/<image>``
(the MURA layout, labels ``positive`` and ``negative``).

The patient folder is the group, ``<body part>/<patient>/<study>`` the study.
"""

from __future__ import annotations

from pathlib import Path

from medclf.config import PatientsSource
from medclf.data.dataset import Preprocessing
from medclf.data.layouts.base import (
    SPLIT_ALIASES,
    SourceListing,
    image_files,
    relative_id,
    require_classes,
    require_dir,
    subdirs,
)
from medclf.errors import DataError

__all__ = ["patients_layout"]


def patients_layout(source: PatientsSource, prep: Preprocessing) -> SourceListing:
    """``root/<split>/<body part>/<patient>/<study>_<label>/<image>``; labels from the study folder suffix."""
    expected = "root/<split>/<body part>/<patient id>/<study>_<positive|negative>/<image>"
    root = require_dir(source.path, expected)
    split_dirs = [(s, p) for p in subdirs(root) if (s := SPLIT_ALIASES.get(p.name.lower()))]
    if not any(s == "train" for s, _ in split_dirs):
        raise DataError(
            f"no train folder; found {[p.name for p in subdirs(root)]}; expected {expected}", path=root
        )
    entries: list[tuple[Path, str, str, str, str]] = []  # file, label, split, patient, study
    for split, split_dir in split_dirs:
        for part_dir in subdirs(split_dir):
            for patient_dir in subdirs(part_dir):
                for study_dir in subdirs(patient_dir):
                    label = _study_label(study_dir, expected)
                    study = f"{part_dir.name}/{patient_dir.name}/{study_dir.name}"
                    entries += [(f, label, split, patient_dir.name, study) for f in image_files(study_dir)]
    class_names = sorted({e[1] for e in entries})
    require_classes(class_names, root, expected)
    train_classes = {e[1] for e in entries if e[2] == "train"}
    absent = sorted(set(class_names) - train_classes)
    if absent:
        raise DataError(f"label {absent[0]!r} has studies outside train but none in train", path=root)
    entries.sort(key=lambda e: relative_id(e[0], root))
    return SourceListing(
        labels=[class_names.index(e[1]) for e in entries],
        ids=[relative_id(e[0], root) for e in entries],
        splits=[e[2] for e in entries],
        class_names=class_names,
        files=[e[0] for e in entries],
        root=root,
        groups=[e[3] for e in entries],
        studies=[e[4] for e in entries],
    )


def _study_label(study_dir: Path, expected: str) -> str:
    """The label a study folder's name ends in (``study1_positive`` -> ``positive``), lower-case."""
    name = study_dir.name
    if "_" not in name or not name.rsplit("_", 1)[1]:
        raise DataError(
            f"study folder {name!r} does not end in _<label> (for example study1_positive); expected {expected}",
            path=study_dir,
        )
    return name.rsplit("_", 1)[1].lower()
