import numpy as np
import pytest

from medclf.config import CVConfig
from medclf.data.dataset import ImageSet
from medclf.data.splitting import make_folds, stratified_kfold
from medclf.errors import DataError


def _imageset(n=120, n_classes=3, groups=True, test=0):
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(n // 4), 4)
    labels = (patients % n_classes).astype(np.int64)
    splits = np.array(["train"] * n, dtype=object)
    if test:
        splits[-test:] = "test"
    return ImageSet(
        images=rng.integers(0, 255, (n, 1, 8, 8), dtype=np.uint8),
        labels=labels,
        ids=np.array([f"img{i}" for i in range(n)]),
        splits=splits.astype(str),
        class_names=[f"c{k}" for k in range(n_classes)],
        groups=np.array([f"P{p}" for p in patients]) if groups else None,
    )


def test_kfold_parts_are_disjoint_cover_the_pool_and_keep_patients_together():
    data = _imageset(test=0)
    folds = make_folds(data, CVConfig(n_folds=5, test_fraction=0.2), seed=0)
    assert len(folds) == 5
    test = folds[0].test
    assert len(test) > 0 and all(np.array_equal(f.test, test) for f in folds)
    holdouts = np.concatenate([f.holdout for f in folds])
    assert len(holdouts) == len(np.unique(holdouts)) == len(data) - len(test)
    for f in folds:
        parts = [set(p.tolist()) for p in (f.train, f.val, f.holdout, f.test)]
        assert sum(map(len, parts)) == len(set().union(*parts)) == len(data)
        patients = [set(data.groups[p]) for p in (f.train, f.val, f.holdout, f.test)]
        for i in range(4):
            for j in range(i + 1, 4):
                assert not patients[i] & patients[j]


def test_folds_are_deterministic_in_seed_and_stratified():
    data = _imageset(groups=False)
    a = make_folds(data, CVConfig(n_folds=3), seed=1)
    b = make_folds(data, CVConfig(n_folds=3), seed=1)
    c = make_folds(data, CVConfig(n_folds=3), seed=2)
    assert all(np.array_equal(x.holdout, y.holdout) for x, y in zip(a, b))
    assert not all(np.array_equal(x.holdout, y.holdout) for x, y in zip(a, c))
    for f in a:
        counts = np.bincount(data.labels[f.holdout], minlength=3)
        assert counts.max() - counts.min() <= 1


def test_holdout_mode_uses_given_splits_and_carves_val():
    data = _imageset(groups=False, test=20)
    (fold,) = make_folds(data, CVConfig(mode="holdout", val_fraction=0.25), seed=0)
    assert len(fold.holdout) == 0
    assert set(fold.test.tolist()) == set(range(100, 120))
    assert len(fold.val) == 25  # exact when not grouped
    assert not set(fold.val.tolist()) & set(fold.train.tolist())


def test_too_few_members_is_a_clear_error():
    with pytest.raises(DataError, match=r"split cv.n_folds asks for \(3 stratified parts\): each class needs at least 3 images there, but class '0' has 2\."):
        stratified_kfold(np.array([0, 0, 1, 1, 1, 1]), n_folds=3, seed=0)


def test_too_small_classes_are_named_not_numbered_and_a_typo_is_suggested():
    labels = np.array([0] * 10 + [1] + [2] * 10)  # 'pneumnia': one mistyped row of a CSV
    names = ["normal", "pneumnia", "pneumonia"]
    message = (r"\(5 stratified parts\): each class needs at least 5 images there, but class 'pneumnia' has 1\. "
               r"Is 'pneumnia' a typo of 'pneumonia'\? Change cv.n_folds")
    with pytest.raises(DataError, match=message):
        stratified_kfold(labels, n_folds=5, seed=0, class_names=names)
    with pytest.raises(DataError, match=r"class 'rare' has 1, 'scarce' has 2\. Change"):  # every small class, no hint
        stratified_kfold(np.array([0] * 9 + [1] + [2, 2]), n_folds=3, seed=0, class_names=["common", "rare", "scarce"])


def test_make_folds_names_the_class_and_the_setting_in_every_split():
    data = _imageset(groups=False)
    data.labels[:3] = [3, 3, 0]  # class 'c3' has two images
    data.class_names.append("c3")
    with pytest.raises(DataError, match=r"cv.n_folds asks for \(5 stratified parts\).* class 'c3' has 2\."):
        make_folds(data, CVConfig(n_folds=5, test_fraction=0.0), seed=0)
    with pytest.raises(DataError, match=r"cv.test_fraction asks for \(2 stratified parts\).* class 'c3' has 1\."):
        data.labels[1] = 0
        make_folds(data, CVConfig(n_folds=2, test_fraction=0.2), seed=0)
    grouped = _imageset()
    grouped.labels[grouped.groups == "P0"] = 3  # one patient of class 'c3', four images
    grouped.class_names.append("c3")
    with pytest.raises(DataError, match=r"test_fraction asks for \(5 stratified parts\): each class needs at least 5 patients there, but class 'c3' has 1\."):
        make_folds(grouped, CVConfig(n_folds=2, test_fraction=0.2), seed=0)


def test_a_holdout_too_small_for_every_class_is_a_data_error_not_a_sklearn_one():
    data = _imageset(n=12, groups=False)  # 3 classes, 12 images: 10% holds out 2, fewer than the classes
    with pytest.raises(DataError, match=r"cv.val_fraction = 0.1 of 12 images holds out 2 and keeps 10, but each side needs at least one image of each of the 3 classes"):
        make_folds(data, CVConfig(mode="holdout", val_fraction=0.1, test_fraction=0.0), seed=0)
