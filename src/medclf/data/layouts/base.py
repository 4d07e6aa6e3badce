"""What every data layout shares: the :class:`SourceListing` a layout returns, its :class:`LayoutInfo` registry
entry, and the file-walking and checking helpers of the file layouts.

Every file layout skips hidden entries (names starting with ".", ``__MACOSX``, ``Thumbs.db``, ``desktop.ini``)
and files whose extension is not an image's, and orders images by their id, the POSIX path relative to the root.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medclf.data.dataset import Preprocessing
from medclf.data.decode import IMAGE_EXTENSIONS, is_image_file
from medclf.errors import DataError

__all__ = [
    "SPLIT_ALIASES",
    "LayoutInfo",
    "SourceListing",
    "file_listing",
    "image_files",
    "is_hidden",
    "relative_id",
    "require_classes",
    "require_dir",
    "require_file",
    "require_labels_in_train",
    "scan_classes",
    "subdirs",
]

_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})  # OS litter, compared lower-case
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


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


@dataclass(frozen=True)
class LayoutInfo:
    """A registered data layout: the function that lists a source, and what other stages need to know of it.

    Attributes:
        list_source: ``(data.source section, preprocessing) -> SourceListing``.
        patient_folder_depth: for ``data.patient_ids: folder``, how many folders (split, fold, class) sit above
            the patient folder in an image's id; None: the image's own folder is its patient (a manifest).
    """

    list_source: Callable[[Any, Preprocessing], SourceListing]
    patient_folder_depth: int | None = None


# ------------------------------------------------------------------------------------------- file walking
def is_hidden(name: str) -> bool:
    """Whether a file or folder name is OS or tool litter, never data."""
    return name.startswith(".") or name.lower() in _IGNORED_NAMES


def subdirs(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` that are not hidden, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name))


def image_files(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, sorted by relative POSIX path, hidden entries pruned."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]  # in place: os.walk then skips them
        found += [Path(dirpath, f) for f in filenames if not is_hidden(f) and is_image_file(Path(dirpath, f))]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def scan_classes(folder: Path) -> dict[str, list[Path]]:
    """``{class name: image files}`` for each class sub-folder of ``folder``; an empty class is a DataError."""
    by_class = {}
    for class_dir in subdirs(folder):
        files = image_files(class_dir)
        if not files:
            raise DataError(
                f"class folder {class_dir.name!r} holds no images ({' '.join(IMAGE_EXTENSIONS)}); add images "
                "or remove the folder",
                path=class_dir,
            )
        by_class[class_dir.name] = files
    return by_class


def relative_id(path: Path, root: Path) -> str:
    """POSIX path relative to ``root``; for a file outside it (a manifest with ``allow_outside_paths``), the
    relative path that climbs out (``../scans/a.png``): stable while the two keep their places, and never an
    absolute path that would name the machine's folders in every output."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, root)).as_posix()


def file_listing(
    root: Path, files: list[Path], labels: list[int], splits: list[str], class_names: list[str]
) -> SourceListing:
    """A listing of files ordered by id (POSIX path relative to ``root``)."""
    ids = [relative_id(f, root) for f in files]
    order = sorted(range(len(files)), key=ids.__getitem__)
    return SourceListing(
        labels=[labels[i] for i in order],
        ids=[ids[i] for i in order],
        splits=[splits[i] for i in order],
        class_names=class_names,
        files=[files[i] for i in order],
        root=root,
    )


# ----------------------------------------------------------------------------------------------- checks
def require_dir(path: Path, expected: str, key: str = "data.source.path") -> Path:
    """``path`` when it is a folder; otherwise a DataError naming it, the config key and the expected layout."""
    if not path.exists():
        raise DataError(f"the folder given as {key} does not exist; expected {expected}", path=path)
    if not path.is_dir():
        raise DataError(f"{key} must be a folder ({expected}), but this is a file", path=path)
    return path


def require_file(path: Path, expected: str, key: str = "data.source.path") -> Path:
    """``path`` when it is a file; otherwise a DataError naming it, the config key and what was expected."""
    if not path.exists():
        raise DataError(f"the file given as {key} does not exist; expected {expected}", path=path)
    if not path.is_file():
        raise DataError(f"{key} must be a file ({expected}), but this is a folder", path=path)
    return path


def require_classes(class_names: Sequence[str], where: Path | str, expected: str) -> None:
    """At least two classes, or a DataError saying what was found and what a classification needs."""
    if len(class_names) < 2:
        found = f"only {class_names[0]!r}" if class_names else "none"
        raise DataError(
            f"a classification dataset needs at least 2 classes, found {len(class_names)} ({found}); "
            f"expected {expected}",
            path=where,
        )


def require_labels_in_train(
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
