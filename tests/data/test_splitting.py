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


# ------------------------------------------------------------------------------ re-split by patient
from medclf.config import Config  # noqa: E402
from medclf.data.splitting import (  # noqa: E402
    resplit_by_patient,
    resplit_data,
    resplit_moves,
    select_folds,
)
from medclf.errors import ConfigError  # noqa: E402


def _given_splits(leaking=(1, 2, 3, 4, 6, 7), n_patients=90):
    """90 patients of two images each (3 classes): 20 % test, val every fifth patient; ``leaking`` patients have
    one image in train and the other in test."""
    patients = np.repeat(np.arange(n_patients), 2)
    splits = np.where(patients < int(n_patients * 0.8), "train", "test").astype(object)
    splits[(patients % 5 == 0) & (splits == "train")] = "val"
    for p in leaking:
        splits[2 * p], splits[2 * p + 1] = "train", "test"
    return splits.astype(str), (patients % 3).astype(np.int64), np.array([f"P{p}" for p in patients])


def _spanning(splits, groups):
    """Patients with images in more than one split."""
    return {g for g in set(groups) if len(set(splits[groups == g])) > 1}


@pytest.mark.parametrize("one_image_patients", [False, True])
def test_resplit_moves_whole_patients_and_keeps_each_split_stratified_and_about_its_share(one_image_patients):
    splits, labels, groups = _given_splits()
    if one_image_patients:  # only the leaking patients have two images: the split can be exact per class
        leaking = np.isin(groups, [f"P{p}" for p in (1, 2, 3, 4, 6, 7)])
        groups = np.where(leaking, groups, [f"I{i}" for i in range(len(groups))])
    assert len(_spanning(splits, groups)) == 6
    for seed in range(4):
        new = resplit_by_patient(splits, labels, groups, seed=seed)
        assert not _spanning(new, groups)  # no patient is split
        for split in ("test", "val"):
            per_class = np.bincount(labels[new == split], minlength=3)
            # stratified: within one image per class, or one patient's two images when every patient has two
            assert per_class.max() - per_class.min() <= (1 if one_image_patients else 2)
            # about its given share: 42 of 180 test images (23 %: a quarter), val 30 of 138 (22 %: a fifth)
            share = (splits == split).mean() if split == "test" else 30 / 138
            expected = (new != "test").sum() / round(1 / share) if split == "val" else len(new) / round(1 / share)
            assert abs(per_class.sum() - expected) <= 4


def test_resplit_keeps_a_clean_test_split_exactly_and_re_splits_train_and_val():
    splits, labels, groups = _given_splits(leaking=())
    splits[groups == "P5"] = ["train", "val"]  # one patient spans train and val only: test stays clean
    new = resplit_by_patient(splits, labels, groups, seed=0)
    np.testing.assert_array_equal(new == "test", splits == "test")
    assert not _spanning(new, groups)
    per_class = np.bincount(labels[new == "val"], minlength=3)
    assert per_class.max() - per_class.min() <= 1 and abs(per_class.sum() - (splits == "val").sum()) <= 4
    moves = resplit_moves(splits, new, groups)
    assert moves["test_unchanged"] is True and moves["splits"]["test"]["images_in"] == 0
    assert moves["n_images_moved"] == (new != splits).sum() > 0
    assert moves["splits"]["val"]["before"] == (splits == "val").sum()
    assert moves["splits"]["val"]["after"] == (new == "val").sum()


def test_resplit_changes_nothing_when_no_patient_spans_two_splits_and_is_deterministic_in_seed():
    splits, labels, groups = _given_splits(leaking=())
    np.testing.assert_array_equal(resplit_by_patient(splits, labels, groups, seed=0), splits)
    splits, labels, groups = _given_splits()
    a, b = (resplit_by_patient(splits, labels, groups, seed=3) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, resplit_by_patient(splits, labels, groups, seed=4))
    np.testing.assert_array_equal(resplit_by_patient(a, labels, groups, seed=9), a)  # idempotent
    moves = resplit_moves(splits, a, groups)
    assert moves["test_unchanged"] is False
    assert moves["n_patients_moved"] == len(set(groups[a != splits]))
    assert sum(s["images_in"] for s in moves["splits"].values()) == moves["n_images_moved"]


def test_resplit_of_multilabel_data_keeps_patients_whole():
    splits, labels, groups = _given_splits()
    multi = np.stack([labels == 0, labels != 1], axis=1).astype(np.int64)
    new = resplit_by_patient(splits, multi, groups, seed=0)
    assert not _spanning(new, groups) and set(new) == {"train", "val", "test"}


def test_resplit_data_needs_patient_ids_and_given_splits():
    data = _imageset(groups=False, test=20)
    cv = CVConfig(resplit_by_patient=True)
    with pytest.raises(ConfigError, match=r"cv.resplit_by_patient: true .* no patient ids\. .*data.source.patient_column"):
        resplit_data(data, cv, seed=0)
    assert resplit_data(data, CVConfig(), seed=0) is data  # off: nothing read
    folds = _imageset(test=20)
    folds.fold_ids = np.zeros(len(folds), dtype=np.int64)
    with pytest.raises(ConfigError, match="predefined fold folders"):
        resplit_data(folds, cv, seed=0)


def test_make_folds_with_resplit_by_patient_keeps_test_patients_out_of_training():
    splits, labels, groups = _given_splits()
    n = len(labels)
    data = ImageSet(images=np.zeros((n, 1, 4, 4), dtype=np.uint8), labels=labels,
                    ids=np.array([f"img{i}" for i in range(n)]), splits=splits, class_names=["a", "b", "c"],
                    groups=groups)
    leaky = make_folds(data, CVConfig(n_folds=3, grouped=True), seed=0)
    assert set(groups[leaky[0].test]) & set(groups[leaky[0].train])  # the given test split leaks
    for fold in make_folds(data, CVConfig(n_folds=3, resplit_by_patient=True), seed=0):
        assert not set(groups[fold.test]) & set(groups[np.concatenate([fold.train, fold.val, fold.holdout])])


# ------------------------------------------------------------------------------------ a subset of folds
def test_select_folds_returns_the_full_studys_folds_and_names_the_valid_indices():
    data = _imageset(groups=False)
    folds = make_folds(data, CVConfig(n_folds=5), seed=1)
    chosen = select_folds(folds, [3, 0])
    assert [f.index for f in chosen] == [0, 3]
    assert all(np.array_equal(c.holdout, folds[c.index].holdout) for c in chosen)
    assert select_folds(folds, None) is folds
    with pytest.raises(ConfigError, match=r"asks for fold 5, 7, but the study has 5 folds, numbered 0 to 4\."):
        select_folds(folds, [0, 5, 7])


def test_cv_folds_parses_the_command_lines_text_and_rejects_bad_input():
    assert CVConfig(folds="0, 3").folds == [0, 3] and CVConfig(folds=2).folds == [2]
    assert CVConfig(folds=[3, 0, 3]).folds == [0, 3]
    with pytest.raises(ConfigError, match=r"cv.folds: takes fold indices separated by commas.*0 to 9 with cv.n_folds: 10.*got '0,x'"):
        from medclf.config import parse_config

        parse_config({"data": {"source": {"type": "synthetic"}}, "cv": {"n_folds": 10, "folds": "0,x"}})
    assert Config.model_fields["cv"].default.folds is None


def test_select_folds_picks_predefined_and_manifest_folds_by_their_index():
    data = _imageset(groups=False)
    data.holdout_folds = np.arange(len(data)) % 3  # a CSV's fold column: folds 0, 1, 2
    folds = make_folds(data, CVConfig(n_folds=5), seed=0)
    (chosen,) = select_folds(folds, [2])
    assert chosen.index == 2 and np.array_equal(chosen.holdout, np.flatnonzero(data.holdout_folds == 2))
    with pytest.raises(ConfigError, match=r"asks for fold 3, but the study has 3 folds, numbered 0 to 2\."):
        select_folds(folds, [3])
    fold_set = _imageset(n=48, groups=False)
    fold_set.fold_ids = np.repeat([0, 1], 24)  # two fold folders, each with train/val/test inside
    fold_set.splits = np.tile(np.repeat(["train", "val", "test"], 8), 2)
    (second,) = select_folds(make_folds(fold_set, CVConfig(), seed=0), [1])
    assert second.index == 1 and set(second.holdout) == set(range(40, 48))
