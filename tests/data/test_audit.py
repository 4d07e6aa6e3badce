"""The leakage audit: planted exact and near duplicates, patient overlap, per-fold leaks and the policy; near
duplicates as pairs that never chain; the near-duplicate benchmark's core functions on a tiny set."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from medclf.data.audit import (
    apply_leakage_policy,
    audit_dataset,
    fold_leaks,
    near_duplicate_candidates,
    perceptual_hashes,
)
from medclf.data.dataset import ImageSet
from medclf.data.splitting import Fold
from medclf.data.synthetic import make_phantoms
from medclf.errors import DataError


def _dataset(groups=None) -> ImageSet:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 1, 32, 32), dtype=np.uint8)
    images[9] = images[1]  # exact duplicate: train/1 planted in test
    images[10] = images[2]  # exact duplicate inside train (index 10 is moved to train below)
    images[11] = np.clip(images[3].astype(int) + 3, 0, 255).astype(np.uint8)  # near duplicate of train/3
    splits = np.array(["train"] * 8 + ["test"] * 4)
    splits[10] = "train"
    return ImageSet(images=images, labels=np.arange(12) % 2, ids=np.array([f"img{i}" for i in range(12)]),
                    splits=splits, class_names=["a", "b"], groups=groups)


def test_audit_finds_exact_duplicates_planted_across_train_and_test() -> None:
    report = audit_dataset(_dataset()).report
    exact = report["exact_duplicates"]
    assert exact["count"] == 2 and exact["across"] == 1 and exact["within"] == 1
    assert exact["groups"] == [["img1", "img9"], ["img2", "img10"]]
    near = report["near_duplicates"]
    assert near["count"] == 1 and near["across"] == 1 and near["within"] == 0 and near["n_images"] == 2
    assert "groups" not in near
    assert near["pairs"] == [{"ids": ["img3", "img11"], "splits": ["train", "test"], "distance": 0,
                              "correlation": near["pairs"][0]["correlation"]}]
    assert near["pairs"][0]["correlation"] > 0.99


def test_unrelated_images_are_not_near_duplicates() -> None:
    rng = np.random.default_rng(1)
    hashes = perceptual_hashes(rng.integers(0, 256, (50, 1, 32, 32), dtype=np.uint8))
    assert len(np.unique(hashes)) == 50


def test_patient_overlap_and_fold_leaks_and_policy() -> None:
    groups = np.array([f"p{i}" for i in range(12)])
    groups[8] = "p0"  # patient p0 in train and test
    data = _dataset(groups)
    train, test = np.arange(8), np.arange(8, 12)
    fold = Fold(0, train, np.array([], dtype=np.int64), np.array([], dtype=np.int64), test)
    result = audit_dataset(data, [fold])
    assert result.report["patient_overlap"]["count"] == 1
    assert result.report["patient_overlap"]["pairs"] == {"test|train": 1}
    assert result.report["folds"] == [{"fold": 0, "exact": 2, "near": 1, "patient": 1}]

    kept, lines = apply_leakage_policy(data, [fold], result, "warn")
    assert kept[0] is fold and "2 exact, 1 near, 1 patient" in lines[0]
    with pytest.raises(DataError, match="leakage audit found evaluation images"):
        apply_leakage_policy(data, [fold], result, "fail")
    dropped, _ = apply_leakage_policy(data, [fold], result, "drop_duplicates")
    assert dropped[0].test.tolist() == [8]  # 9 and 10 exact, 11 near: dropped; 8 only shares a patient


def _chain() -> ImageSet:
    """a~b and b~c can pass the near test while a~c fails: b is a blend of two unrelated images a and c.

    a (train), b (test), c (test), then five unrelated fillers.
    """
    rng = np.random.default_rng(3)
    smooth = lambda: np.kron(rng.integers(0, 256, (8, 8)), np.ones((4, 4)))  # noqa: E731 - blocky, hashable
    a, c = smooth(), smooth()
    b = 0.5 * a + 0.5 * c
    fillers = [smooth() for _ in range(5)]
    images = np.stack([a, b, c, *fillers]).clip(0, 255).astype(np.uint8)[:, None]
    splits = np.array(["train", "test", "test", "train", "train", "train", "test", "test"])
    return ImageSet(images=images, labels=np.arange(8) % 2, ids=np.array(["a", "b", "c", *[f"f{i}" for i in range(5)]]),
                    splits=splits, class_names=["x", "y"])


def test_near_duplicates_are_pairs_that_never_chain() -> None:
    data = _chain()
    # The thresholds that make a~b and b~c pass and a~c fail, read off the real scores of this triple.
    i, j, dist, corr = near_duplicate_candidates(data.images[:3], max_distance=64, min_correlation=-1)
    score = {(int(x), int(y)): (int(d), float(c)) for x, y, d, c in zip(i, j, dist, corr)}
    cut = (score[0, 1][1] + score[0, 2][1]) / 2
    assert min(score[0, 1][1], score[1, 2][1]) > cut > score[0, 2][1]  # the blend is closer to both ends
    result = audit_dataset(data, near_distance=64, near_correlation=cut)
    near = result.report["near_duplicates"]
    assert sorted(tuple(p["ids"]) for p in near["pairs"]) == [("a", "b"), ("b", "c")]  # no a~c, no group
    assert near["count"] == 2 and near["across"] == 1 and near["within"] == 1 and near["n_images"] == 3
    assert "groups" not in near

    # Fold: a trains, b and c are evaluated; c is a near leak only through b, so it is not one.
    fold = Fold(0, np.array([0, 3, 4, 5]), np.array([], dtype=np.int64), np.array([], dtype=np.int64),
                np.array([1, 2, 6, 7]))
    assert fold_leaks(data, fold, result)["near"].tolist() == [1]
    # b trains too: now c pairs with a training image directly.
    fold_b = Fold(0, np.array([0, 1, 3]), np.array([], dtype=np.int64), np.array([], dtype=np.int64),
                  np.array([2, 6, 7]))
    assert fold_leaks(data, fold_b, result)["near"].tolist() == [2]


def test_an_exact_copy_of_a_near_duplicate_counts_once_per_image_pair() -> None:
    data = _dataset()
    data.images[7] = data.images[11]  # img7 (train) holds img11's content: both pair with img3
    result = audit_dataset(data)
    near = result.report["near_duplicates"]
    assert near["count"] == 2 and near["within"] == 1 and near["across"] == 1 and near["n_images"] == 3
    assert sorted(tuple(p["ids"]) for p in near["pairs"]) == [("img3", "img11"), ("img3", "img7")]
    assert near["pairs"][0]["splits"] == ["train", "test"]  # the pair spanning two splits is listed first
    fold = Fold(0, np.arange(8), np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.arange(8, 12))
    leaks = fold_leaks(data, fold, result)
    assert leaks["exact"].tolist() == [9, 10, 11] and leaks["near"].tolist() == []  # img11 copies img7: exact


def test_near_duplicate_search_can_be_switched_off() -> None:
    near = audit_dataset(_dataset(), near=False).report["near_duplicates"]
    assert near["enabled"] is False and near["count"] == 0 and near["pairs"] == []


def _benchmark():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "near_duplicates.py"
    spec = importlib.util.spec_from_file_location("near_duplicates_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_benchmark_labels_copies_as_positives_and_slices_as_hard_negatives() -> None:
    bench = _benchmark()
    phantoms = make_phantoms(n_patients=3, slices_per_patient=4, image_size=32, seed=0)
    sources = np.concatenate([phantoms.images[:, 0], phantoms.images[:1, 0]])  # the last: a true exact duplicate
    volume = np.append(np.repeat(np.arange(3), 4), 0)
    pool = bench.make_pool(sources, n_per_kind=1, working_size=16, seed=0, volume=volume)
    assert pool.images.shape == (13 + 4, 1, 16, 16) and sorted(pool.kind[13:]) == sorted(bench.KINDS)
    m = len(pool.origin)
    i, j = np.triu_indices(m, 1)
    labels = bench.label_pairs(pool, i, j)
    assert labels["positive"].sum() == 4 and set(labels["kind"][labels["positive"]]) == set(bench.KINDS)
    assert (labels["positive"] & labels["negative"]).sum() == 0
    # Sources 0 and 12 are identical: their pair (and the pairs of their copies) is neither kind of pair.
    assert not labels["negative"][(i == 0) & (j == 12)].any() and not labels["positive"][(i == 0) & (j == 12)].any()
    assert labels["hard"][(i == 1) & (j == 2)].all() and not labels["hard"][(i == 1) & (j == 5)].any()
    assert bench.n_negative_pairs(pool) == int(labels["negative"].sum())

    # Scores: a test that flags everything has recall 1 and precision positives / (positives + negatives).
    rows = bench.score_grid(pool, i, j, np.zeros(len(i), dtype=np.int64), np.ones(len(i)), distances=(0,),
                            correlations=(0.5,))
    n_neg = int(labels["negative"].sum())
    assert rows[0]["recall"] == {k: 1.0 for k in bench.KINDS} and rows[0]["fp_rate"] == 1.0
    assert rows[0]["precision"] == pytest.approx(4 / (4 + n_neg))
    assert rows[0]["precision_rare"] == pytest.approx(0.05 * 13 / (0.05 * 13 + n_neg))  # 13 sources, 5 % copied
    strict = bench.score_grid(pool, i, j, np.zeros(len(i), dtype=np.int64), np.ones(len(i)), distances=(0,),
                              correlations=(1.5,))
    assert strict[0]["true_positives"] == 0 and np.isnan(strict[0]["precision"])


def test_benchmark_chooses_the_best_recall_among_precise_thresholds() -> None:
    bench = _benchmark()
    row = lambda d, c, p, r: {"max_distance": d, "min_correlation": c, "precision": 1.0,  # noqa: E731
                              "precision_rare": p, "mean_recall": r}
    results = {"x": [row(4, 0.99, 0.99, 0.7), row(8, 0.97, 0.90, 0.9), row(8, 0.99, 0.96, 0.8)],
               "y": [row(4, 0.99, 1.00, 0.6), row(8, 0.97, 0.99, 0.9), row(8, 0.99, 0.97, 0.7)]}
    chosen = bench.choose_defaults(results, min_precision=0.95)
    assert (chosen["max_distance"], chosen["min_correlation"]) == (8, 0.99)
    assert bench.choose_defaults(results, min_precision=0.999) is None


# ------------------------------------------------------- issue 15: copies the layout expects, and the fix named
def _no_fold(test: np.ndarray, train: np.ndarray, index: int = 0) -> Fold:
    return Fold(index, train, np.array([], dtype=np.int64), np.array([], dtype=np.int64), test)


def _write_fold_tree(root: Path) -> None:
    """Fold0..Fold2 of the same 12 noise images (2 classes), rotated through test/valid/train, copied byte for byte."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(12)]
    for k in range(3):
        for i, image in enumerate(pixels):
            split = ("test", "valid", "train")[(i // 4 - k) % 3]
            path = root / f"Fold{k}" / split / "ab"[i % 2] / f"img{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)


def test_an_image_in_every_fold_is_no_copy_and_a_copy_inside_one_fold_is_found(tmp_path: Path, make_config) -> None:
    import shutil

    from medclf.config import CVConfig
    from medclf.data import load_dataset
    from medclf.data.splitting import make_folds

    root = tmp_path / "folds"
    _write_fold_tree(root)
    data = load_dataset(make_config({"type": "folds", "path": str(root)}))
    assert len(data) == 36 and data.duplicates == []  # 12 images seen through 3 folds: 24 entries repeat, no copy
    folds = make_folds(data, CVConfig(), seed=0)
    result = audit_dataset(data, folds)  # near duplicates searched too: every fold compared within itself
    assert result.report["exact_duplicates"]["count"] == 0 and result.report["near_duplicates"]["count"] == 0
    assert apply_leakage_policy(data, folds, result, "warn")[1] == []

    # one byte-identical copy of fold 1's test image in fold 1's own train: one copy, one leak, in fold 1 only
    shutil.copyfile(root / "Fold1" / "test" / "a" / "img04.png", root / "Fold1" / "train" / "a" / "copy.png")
    data = load_dataset(make_config({"type": "folds", "path": str(root)}))
    assert data.duplicates == [["Fold1/test/a/img04.png", "Fold1/train/a/copy.png"]]
    folds = make_folds(data, CVConfig(), seed=0)
    result = audit_dataset(data, folds)
    assert result.report["exact_duplicates"]["across"] == 1
    assert [f["exact"] for f in result.report["folds"]] == [0, 1, 0]
    _, lines = apply_leakage_policy(data, folds, result, "warn")
    assert lines[0].startswith("fold 1: evaluation images leaking from training: 1 exact ") and len(lines) == 2
    assert "set audit.leakage: drop_duplicates" in lines[1]


def test_find_duplicates_counts_a_copy_once_whatever_the_folds_hold() -> None:
    from medclf.data.sources import find_duplicates

    ids = ["F0/a", "F0/b", "F0/c", "F1/a", "F1/b", "F1/c", "F1/d"]
    digests = ["x", "x", "y", "x", "x", "y", "x"]  # a and b are one picture; fold 1 also holds a third copy, d
    assert find_duplicates(ids, digests, fold_ids=[0, 0, 0, 1, 1, 1, 1]) == [["F1/a", "F1/b", "F1/d"]]
    assert find_duplicates(ids[:3], digests[:3], fold_ids=[0, 0, 0]) == [["F0/a", "F0/b"]]
    assert find_duplicates(ids, digests) == [["F0/a", "F0/b", "F1/a", "F1/b", "F1/d"], ["F0/c", "F1/c"]]  # no folds
    assert find_duplicates(["F0/a", "F1/a"], ["x", "x"], fold_ids=[0, 1]) == []  # one image, two folds


def test_a_patient_leak_names_the_fix_that_fits_where_the_patients_come_from() -> None:
    groups = np.array([f"p{i}" for i in range(12)])
    groups[8] = "p0"  # the data's own test split shares patient p0 with train
    data = _dataset(groups)
    fold = _no_fold(np.arange(8, 12), np.arange(8))
    result = audit_dataset(data, [fold])
    _, lines = apply_leakage_policy(data, [fold], result, "warn")
    assert lines[-1] == (
        "to fix the leaks: set audit.leakage: drop_duplicates (drops the duplicates from the evaluation splits), or "
        "remove the files audit.json names; the data's own splits share 1 patient: set cv.resplit_by_patient: true "
        "(re-splits them grouped by patient); audit.leakage: fail refuses a run that leaks")
    _, lines = apply_leakage_policy(data, [fold], result, "drop_duplicates")  # the duplicates are gone: patient only
    assert lines[0].endswith("1 patient (exact/near duplicates of a training image, images of a training patient)"
                             "; the exact and near ones dropped (audit.leakage: drop_duplicates); see audit.json")
    assert lines[-1] == ("to fix the leaks: the data's own splits share 1 patient: set cv.resplit_by_patient: true "
                         "(re-splits them grouped by patient)")
    with pytest.raises(DataError, match=r"To fix it: .*set cv\.resplit_by_patient: true \(re-splits them grouped by "
                                        r"patient\); or set audit\.leakage: warn"):
        apply_leakage_policy(data, [fold], result, "fail")

    # every image in train: the folds themselves split patient p0 (cv.grouped: false)
    data.splits[:] = "train"
    result = audit_dataset(data, [fold])
    assert apply_leakage_policy(data, [fold], result, "drop_duplicates")[1][-1] == (
        "to fix the leaks: set cv.grouped: true (keeps each patient's images on one side of every split)")
    # a manifest's fold column put p0 in two folds
    data.holdout_folds = np.array([0] * 8 + [1] * 4)
    assert apply_leakage_policy(data, [fold], result, "drop_duplicates")[1][-1] == (
        "to fix the leaks: give every image of a patient the same fold in the manifest's fold column")
    # predefined fold folders: only moving the files fixes them
    data.holdout_folds, data.fold_ids, data.splits = None, np.zeros(12, dtype=np.int64), np.array(
        ["train"] * 8 + ["test"] * 4)
    result = audit_dataset(data, [fold])
    assert apply_leakage_policy(data, [fold], result, "drop_duplicates")[1][-1] == (
        "to fix the leaks: the fold folders put patients in two splits of one fold: move each one's images into one "
        "split of that fold (audit.json lists them); cv.resplit_by_patient cannot change fold folders")


def test_a_clean_dataset_gives_no_warning_line() -> None:
    data = _dataset()
    data.images[9] = 255 - data.images[1]  # no exact copy, no near one: img9, img10, img11 made unrelated
    data.images[10] = 255 - data.images[2]
    data.images[11] = np.roll(data.images[3], 16, axis=1)
    fold = _no_fold(np.arange(8, 12), np.arange(8))
    result = audit_dataset(data, [fold])
    assert result.report["folds"] == [{"fold": 0, "exact": 0, "near": 0, "patient": 0}]
    kept, lines = apply_leakage_policy(data, [fold], result, "warn")
    assert kept[0] is fold and lines == []


def test_near_duplicates_of_chosen_rows_in_small_chunks_match_a_copy(tmp_path, monkeypatch) -> None:
    # the audit reads a memory-mapped set a slice at a time and never copies the rows it compares
    from medclf.data import audit

    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (30, 3, 20, 24), dtype=np.uint8)
    noisy = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    np.save(tmp_path / "images.npy", np.concatenate([base, noisy]))
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    rows = np.sort(rng.choice(60, 45, replace=False))
    whole = near_duplicate_candidates(np.array(mapped[rows]), max_distance=20, min_correlation=0.5)
    monkeypatch.setattr(audit, "_CHUNK_BYTES", 5000)  # a few images per slice
    sliced = near_duplicate_candidates(mapped, max_distance=20, min_correlation=0.5, rows=rows)
    assert len(whole[0]) > 3
    for expected, got in zip(whole, sliced):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(perceptual_hashes(mapped), perceptual_hashes(np.array(mapped)))
