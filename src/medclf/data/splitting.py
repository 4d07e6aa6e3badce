"""Cross-validation splits: pure functions of labels (and patient groups), indices in, indices out.

Every split is stratified by class; when patient ids are given, it is also grouped (scikit-learn's
``StratifiedGroupKFold``), so no patient ever sits on both sides of a split.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import (
    StratifiedGroupKFold,
    StratifiedKFold,
    StratifiedShuffleSplit,
)

from medclf.config import CVConfig
from medclf.data.dataset import ImageSet
from medclf.errors import ConfigError, DataError

__all__ = [
    "Fold",
    "make_folds",
    "manifest_folds",
    "predefined_folds",
    "resplit_by_patient",
    "resplit_data",
    "resplit_moves",
    "select_folds",
    "stratified_holdout",
    "stratified_kfold",
]


@dataclass(frozen=True)
class Fold:
    """Indices (into the ImageSet) of one fold's parts.

    ``train`` fits the weights; ``val`` picks the best epoch; ``holdout`` is the fold's held-out part of the
    pool in k-fold mode (empty in holdout mode); ``test`` is the data's test split (possibly empty).
    """

    index: int
    train: np.ndarray
    val: np.ndarray
    holdout: np.ndarray
    test: np.ndarray

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "holdout": self.holdout, "test": self.test}


def stratified_kfold(
    labels: np.ndarray, *, n_folds: int, seed: int, groups: np.ndarray | None = None, setting: str = "cv.n_folds",
    class_names: Sequence[str] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held_out) position pairs of a shuffled, stratified (and grouped) k-fold split.

    ``setting`` names the config key that asked for the split and ``class_names`` the class of each label
    index, for the error when a class is too small.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return multilabel_kfold(labels, n_folds=n_folds, seed=seed, groups=groups)
    _check_enough(labels, n_folds, groups, setting, class_names)
    if groups is None:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        return [(tr, te) for tr, te in splitter.split(np.zeros(len(labels)), labels)]
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in splitter.split(np.zeros(len(labels)), labels, groups)]


def stratified_holdout(
    labels: np.ndarray, *, fraction: float, seed: int, groups: np.ndarray | None = None, setting: str,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) positions holding out ``fraction`` of the items, stratified by class.

    Grouped, whole patients move together, so the fraction is approximate: one part of a stratified group
    k-fold with round(1 / fraction) parts (at least 2, so at most half is held out).
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and groups is None:
        from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        keep, held = next(splitter.split(np.zeros(len(labels)), labels))
        return keep, held
    if groups is None:
        _check_enough(labels, 2, None, setting, class_names)
        _check_holdout_size(labels, fraction, setting)
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        keep, held = next(splitter.split(np.zeros(len(labels)), labels))
        return keep, held
    n_splits = max(2, round(1 / fraction))
    return stratified_kfold(
        labels, n_folds=n_splits, seed=seed, groups=groups, setting=setting, class_names=class_names
    )[0]


def multilabel_kfold(
    labels: np.ndarray, *, n_folds: int, seed: int, groups: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held_out) pairs of an iteratively stratified multi-label k-fold (Sechidis et al., 2011).

    With groups, whole groups are stratified by the union of their images' labels, so no group is split.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    if len(labels) < n_folds:
        raise DataError(f"Cannot make {n_folds} folds of {len(labels)} images; lower cv.n_folds.")
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    if groups is None:
        return [(tr, te) for tr, te in splitter.split(np.zeros(len(labels)), labels)]
    unique, inverse = np.unique(groups, return_inverse=True)
    if len(unique) < n_folds:
        raise DataError(f"Cannot make {n_folds} grouped folds of {len(unique)} patients; lower cv.n_folds.")
    group_labels = np.zeros((len(unique), labels.shape[1]), dtype=np.int64)
    np.maximum.at(group_labels, inverse, labels)
    return [
        (np.flatnonzero(~np.isin(inverse, te)), np.flatnonzero(np.isin(inverse, te)))
        for _, te in splitter.split(np.zeros(len(unique)), group_labels)
    ]


def _check_enough(
    labels: np.ndarray, n_parts: int, groups: np.ndarray | None, setting: str, class_names: Sequence[str] | None
) -> None:
    """A DataError naming every class with fewer images (or patients) than ``n_parts``, by its name."""
    classes, counts = np.unique(labels, return_counts=True)
    units = counts if groups is None else np.array([len(np.unique(groups[labels == c])) for c in classes])
    what = "images" if groups is None else "patients"
    small = [k for k in np.argsort(units, kind="stable") if units[k] < n_parts]
    if not small:
        return
    names = [_class_name(classes[k], class_names) for k in small]
    listed = ", ".join(f"{name!r} has {int(units[k])}" for name, k in zip(names[:5], small[:5]))
    more = f" and {len(small) - 5} more" if len(small) > 5 else ""
    raise DataError(
        f"Cannot make the split {setting} asks for ({n_parts} stratified parts): each class needs at least "
        f"{n_parts} {what} there, but class {listed}{more}.{_typo_hint(names, class_names)} Change {setting}, "
        "add data for that class, or fix its label."
    )


def _class_name(label: object, class_names: Sequence[str] | None) -> str:
    """The name of class index ``label`` (its index as text when the names are unknown)."""
    index = int(label)  # type: ignore[call-overload]
    return str(class_names[index]) if class_names is not None and 0 <= index < len(class_names) else str(index)


def _typo_hint(small: list[str], class_names: Sequence[str] | None) -> str:
    """" Is 'pneumnia' a typo of 'pneumonia'?" when a too-small class is spelt almost like another class."""
    if not class_names:
        return ""
    for name in small:
        others = [str(c) for c in class_names if str(c) != name]
        close = difflib.get_close_matches(name, others, n=1, cutoff=0.75)
        if close:
            return f" Is {name!r} a typo of {close[0]!r}?"
    return ""


def _check_holdout_size(labels: np.ndarray, fraction: float, setting: str) -> None:
    """Both sides of a stratified shuffle split must hold at least one image per class (else sklearn fails)."""
    n, n_classes = len(labels), len(np.unique(labels))
    n_held = int(np.ceil(fraction * n))
    if n_held < n_classes or n - n_held < n_classes:
        raise DataError(
            f"Cannot make the split {setting} asks for: {setting} = {fraction} of {n} images holds out {n_held} "
            f"and keeps {n - n_held}, but each side needs at least one image of each of the {n_classes} classes. "
            f"Change {setting} or add data."
        )


def make_folds(data: ImageSet, cv: CVConfig, *, seed: int) -> list[Fold]:
    """The folds of a study, deterministic in ``seed`` (every fold, whatever ``cv.folds`` selects).

    k-fold mode cross-validates the images of the ``cv.pool`` splits and always carves each fold's validation
    split from its training part (the data's own val split is used only when "val" is in ``cv.pool``).
    Holdout mode uses the data's own train/val splits as one fold, carving val from train when there is none.
    A test split is carved first when ``cv.test_fraction`` > 0 and the data has none. With
    ``cv.resplit_by_patient`` the data's splits are first re-split by patient (:func:`resplit_data`).
    """
    if data.fold_ids is not None:
        return predefined_folds(data)
    data = resplit_data(data, cv, seed=seed)  # idempotent: a caller that already re-split the data changes nothing
    groups = data.groups if cv.grouped else None
    test = data.split_indices("test")
    candidates = np.flatnonzero(data.splits != "test")
    if len(test) == 0 and cv.test_fraction > 0:
        keep, held = stratified_holdout(
            data.labels[candidates], fraction=cv.test_fraction, seed=seed, groups=_sub(groups, candidates),
            setting="cv.test_fraction", class_names=data.class_names,
        )
        candidates, test = candidates[keep], np.sort(candidates[held])

    if cv.mode == "holdout":
        train = np.intersect1d(candidates, data.split_indices("train"))
        val = np.intersect1d(candidates, data.split_indices("val"))
        if len(val) == 0:
            train, val = _carve_val(data, train, cv, seed, groups)
        return [Fold(0, train, val, np.array([], dtype=np.int64), test)]

    pool = candidates[np.isin(data.splits[candidates], cv.pool)]
    if data.holdout_folds is not None:
        pairs = manifest_folds(data.holdout_folds[pool])
    else:
        pairs = stratified_kfold(
            data.labels[pool], n_folds=cv.n_folds, seed=seed, groups=_sub(groups, pool), class_names=data.class_names
        )
    folds = []
    for k, (tr, ho) in enumerate(pairs):
        train, val = _carve_val(data, pool[tr], cv, seed + k, groups)
        folds.append(Fold(k, train, val, np.sort(pool[ho]), test))
    return folds


def predefined_folds(data: ImageSet) -> list[Fold]:
    """The folds of a fold-folder layout, as they are: fold k trains on ``Fold<k>/train``, picks its epoch on
    ``Fold<k>/valid`` and is scored on ``Fold<k>/test`` (its holdout split)."""
    folds = []
    for k in np.unique(data.fold_ids):
        members = data.fold_ids == k
        part = {s: np.flatnonzero(members & (data.splits == s)) for s in ("train", "val", "test")}
        if len(part["val"]) == 0:
            raise DataError(
                f"predefined fold {k} has no valid (or val) folder; every fold needs one to pick its best epoch"
            )
        folds.append(Fold(int(k), part["train"], part["val"], part["test"], np.array([], dtype=np.int64)))
    return folds


def manifest_folds(holdout_folds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held_out) position pairs of a manifest's fold column: fold k holds out the rows marked k."""
    return [
        (np.flatnonzero(holdout_folds != k), np.flatnonzero(holdout_folds == k))
        for k in np.unique(holdout_folds[holdout_folds >= 0])
    ]


def _carve_val(
    data: ImageSet, train: np.ndarray, cv: CVConfig, seed: int, groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    keep, held = stratified_holdout(
        data.labels[train], fraction=cv.val_fraction, seed=seed, groups=_sub(groups, train), setting="cv.val_fraction",
        class_names=data.class_names,
    )
    return np.sort(train[keep]), np.sort(train[held])


def _sub(groups: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return None if groups is None else groups[idx]


# ------------------------------------------------------------------------------------ a subset of folds
def select_folds(folds: list[Fold], wanted: Sequence[int] | None) -> list[Fold]:
    """The folds whose index ``wanted`` (``cv.folds``) lists, in fold order; every fold when it is None.

    The folds are made in full first, so fold k of a subset is fold k of the whole study.

    Raises:
        ConfigError: ``wanted`` names a fold the study does not have, listing the indices it has.
    """
    if wanted is None:
        return folds
    have = [f.index for f in folds]
    missing = sorted(set(wanted) - set(have))
    if missing:
        raise ConfigError(
            f"cv.folds (--folds) asks for fold {', '.join(map(str, missing))}, but the study has "
            f"{len(have)} fold{'s' if len(have) != 1 else ''}, numbered {_index_range(have)}. Give indices among "
            "those, or leave cv.folds out to run every fold."
        )
    return [f for f in folds if f.index in set(wanted)]


def _index_range(indices: list[int]) -> str:
    if indices == list(range(indices[0], indices[0] + len(indices))) and len(indices) > 2:
        return f"{indices[0]} to {indices[-1]}"
    return ", ".join(map(str, indices))


# ------------------------------------------------------------------------------ re-split by patient
def resplit_by_patient(splits: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, seed: int) -> np.ndarray:
    """The given splits with whole patients moved so that no patient spans two of train, val and test.

    The test split is kept exactly when none of its patients has an image elsewhere; otherwise it is carved
    again from every image, grouped by patient and stratified by class, with about its given share. The other
    images keep their train/val split when test was kept and no patient spans train and val; otherwise they are
    pooled and re-split the same way, val keeping about its given share of them. Splits that share no patient
    come back unchanged, so applying this twice changes nothing the second time.

    Args:
        splits: (N,) "train", "val" or "test" per image.
        labels: (N,) class indices, or (N, L) multi-hot labels.
        groups: (N,) patient ids.
        seed: the seed of the grouped, stratified splits.

    Returns:
        (N,) the new split of every image, as text.

    Raises:
        DataError: a class has too few patients for the grouped split of about the given share.
    """
    labels, groups = np.asarray(labels), np.asarray(groups).astype(str)
    given = np.asarray(splits).astype(str)
    new = given.astype(object)  # not given's fixed-width text: "test"/"val" data would cut "train" to "trai"
    is_test = given == "test"
    test_kept = not np.isin(groups[is_test], groups[~is_test]).any()
    if not test_kept:
        everything = np.arange(len(given))
        new[:] = "train"
        new[_held_out(everything, labels, groups, share=is_test.mean(), seed=seed)] = "test"
    rest = np.flatnonzero(new != "test")
    is_val = given[rest] == "val"
    val_patients, train_patients = groups[rest][is_val], groups[rest][~is_val]
    if is_val.any() and not (test_kept and not np.isin(val_patients, train_patients).any()):
        new[rest] = "train"
        share = (given == "val").sum() / np.isin(given, ["train", "val"]).sum()
        new[_held_out(rest, labels, groups, share=share, seed=seed + 1)] = "val"
    return new.astype(str)


def _held_out(idx: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, share: float, seed: int) -> np.ndarray:
    """The images of ``idx`` a grouped, stratified holdout of about ``share`` of them puts aside."""
    _, held = stratified_holdout(labels[idx], fraction=float(share), seed=seed, groups=groups[idx],
                                 setting="cv.resplit_by_patient")
    return idx[held]


def resplit_moves(given: np.ndarray, new: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """What :func:`resplit_by_patient` moved (splits.json's ``resplit``): per split, the images and patients
    that moved in and out, and the sizes before and after."""
    given, new, groups = np.asarray(given).astype(str), np.asarray(new).astype(str), np.asarray(groups).astype(str)
    moved = given != new
    per_split = {}
    for split in sorted(set(given) | set(new), key=("train", "val", "test").index):
        into, out_of = moved & (new == split), moved & (given == split)
        per_split[str(split)] = {
            "before": int((given == split).sum()), "after": int((new == split).sum()),
            "images_in": int(into.sum()), "images_out": int(out_of.sum()),
            "patients_in": int(len(np.unique(groups[into]))), "patients_out": int(len(np.unique(groups[out_of]))),
        }
    return {
        "n_images_moved": int(moved.sum()),
        "n_patients_moved": int(len(np.unique(groups[moved]))),
        "test_unchanged": bool(np.array_equal(given == "test", new == "test")),
        "splits": per_split,
    }


def resplit_data(data: ImageSet, cv: CVConfig, *, seed: int) -> ImageSet:
    """``data`` with its splits re-split by patient when ``cv.resplit_by_patient`` is on (else ``data`` itself).

    The fingerprint stays the data's: the re-split follows from the data, the key and the seed.

    Raises:
        ConfigError: the key is on but the data has no patient ids, or has predefined fold folders.
    """
    if not cv.resplit_by_patient:
        return data
    if data.fold_ids is not None:
        raise ConfigError(
            "cv.resplit_by_patient: true re-splits the data's own train/val/test splits, but this data has "
            "predefined fold folders (data.source.type: folds), whose splits are fixed by design. Remove the key, "
            "or give the images with their splits (type: splits or csv) to have them re-split by patient."
        )
    if data.groups is None:
        raise ConfigError(
            "cv.resplit_by_patient: true moves whole patients between the data's splits, but the data has no "
            "patient ids. Give them: a CSV's patient column (data.source.patient_column, default 'patient_id'), "
            "a patient/study tree (type: patients), or data.patient_ids (header or folder) for DICOM; or remove "
            "the key."
        )
    new = resplit_by_patient(data.splits, data.labels, data.groups, seed=seed)
    if np.array_equal(new, data.splits.astype(str)):
        return data
    return dataclasses.replace(data, splits=new)
