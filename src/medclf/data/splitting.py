"""Cross-validation splits: pure functions of labels (and patient groups), indices in, indices out.

Every split is stratified by class; when patient ids are given, it is also grouped (scikit-learn's
``StratifiedGroupKFold``), so no patient ever sits on both sides of a split.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import (
    StratifiedGroupKFold,
    StratifiedKFold,
    StratifiedShuffleSplit,
)

from medclf.config import CVConfig
from medclf.data.dataset import ImageSet
from medclf.errors import DataError

__all__ = ["Fold", "make_folds", "manifest_folds", "predefined_folds", "stratified_holdout", "stratified_kfold"]


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
    """The folds of a study, deterministic in ``seed``.

    k-fold mode cross-validates the images of the ``cv.pool`` splits and always carves each fold's validation
    split from its training part (the data's own val split is used only when "val" is in ``cv.pool``).
    Holdout mode uses the data's own train/val splits as one fold, carving val from train when there is none.
    A test split is carved first when ``cv.test_fraction`` > 0 and the data has none.
    """
    if data.fold_ids is not None:
        return predefined_folds(data)
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
