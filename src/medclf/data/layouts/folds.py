"""The ``folds`` layout: predefined cross-validation folds as folders,
``root/Fold<k>/{train,valid,test}/<class>/<image>``.

Cross-validation uses exactly these folds; an image that sits in several folds' folders is one entry per fold.
"""

from __future__ import annotations

import re
from pathlib import Path

from medclf.config import FoldsSource
from medclf.data.dataset import Preprocessing
from medclf.data.layouts.base import (
    SPLIT_ALIASES,
    SourceListing,
    relative_id,
    require_classes,
    require_dir,
    scan_classes,
    subdirs,
)
from medclf.errors import DataError

__all__ = ["FOLD_NAME", "folds_layout"]

# a fold folder: Fold0, fold_1, Fold 2 (also read by layouts.detect)
FOLD_NAME = re.compile(r"^fold[_\- ]?(\d+)$", re.IGNORECASE)


def folds_layout(source: FoldsSource, prep: Preprocessing) -> SourceListing:
    """``root/Fold<k>/<split>/<class>/<image>``: fold k trains on its train, picks epochs on its valid and
    is scored on its test folder (the fold's held-out part)."""
    expected = "root/Fold0 .. FoldN/{train,valid,test}/<class>/<image>"
    root = require_dir(source.path, expected)
    fold_dirs = {int(m.group(1)): p for p in subdirs(root) if (m := FOLD_NAME.match(p.name))}
    if len(fold_dirs) < 2:
        raise DataError(
            f"found {len(fold_dirs)} fold folders (Fold0, Fold1, ...), cross-validation needs at least 2; "
            f"folders there: {[p.name for p in subdirs(root)]}; expected {expected}",
            path=root,
        )
    entries: list[tuple[Path, str, str, int]] = []  # file, class, split, fold
    for k, fold_dir in sorted(fold_dirs.items()):
        split_dirs = {SPLIT_ALIASES.get(p.name.lower()): p for p in subdirs(fold_dir)}
        if "train" not in split_dirs:
            raise DataError(f"fold folder has no train folder; expected {expected}", path=fold_dir)
        for split, split_dir in split_dirs.items():
            if split is None:
                continue
            for name, files in scan_classes(split_dir).items():
                entries += [(f, name, split, k) for f in files]
    class_names = sorted({name for _, name, _, _ in entries})
    require_classes(class_names, root, expected)
    for k in fold_dirs:
        train_classes = {n for _, n, s, f in entries if f == k and s == "train"}
        absent = sorted({n for _, n, s, f in entries if f == k} - train_classes)
        if absent:
            raise DataError(
                f"class {absent[0]!r} appears in fold {k}'s evaluation folders but not in its train folder; a model "
                "cannot learn a class it never sees",
                path=fold_dirs[k],
            )
    entries.sort(key=lambda e: relative_id(e[0], root))
    return SourceListing(
        labels=[class_names.index(n) for _, n, _, _ in entries],
        ids=[relative_id(f, root) for f, _, _, _ in entries],
        splits=[s for _, _, s, _ in entries],
        class_names=class_names,
        files=[f for f, _, _, _ in entries],
        root=root,
        fold_ids=[k for _, _, _, k in entries],
    )
