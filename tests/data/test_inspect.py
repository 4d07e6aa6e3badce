"""``medclf inspect``'s report: unreadable files are counted and named (the first few), by id."""

from __future__ import annotations

import json
from pathlib import Path

from medclf.data.inspect import inspect_dataset, report_lines, unreadable_summary


def test_unreadable_files_are_counted_and_the_first_few_named(tmp_path: Path, make_config, img) -> None:
    root = tmp_path / "data"
    for cls in ("a", "b"):
        for i in range(3):
            img.write(root / cls / f"{i}.png", seed=10 * ord(cls) + i)
    for i in range(7):  # zero-byte files, and one DICOM that is not one
        (root / "b" / f"bad{i}.{'dcm' if i == 6 else 'png'}").write_bytes(b"garbage" * 30 if i == 6 else b"")
    report = inspect_dataset(make_config({"type": "folder", "path": str(root)}), out=tmp_path / "ins")
    assert report["n_unreadable"] == 7 and report["n_images"] == 6
    assert [u["path"] for u in report["unreadable"]] == [f"b/bad{i}.png" for i in range(6)] + ["b/bad6.dcm"]  # ids, not machine paths
    assert json.loads((tmp_path / "ins" / "inspect.json").read_text())["n_unreadable"] == 7
    line = unreadable_summary(report)
    assert line.startswith("7 unreadable files left out: b/bad0.png (") and "b/bad4.png (" in line
    assert "bad5" not in line and line.endswith("; and 2 more, all listed in inspect.json")
    assert "0 bytes" in line  # the reason is given with each name


def test_summary_of_one_or_no_unreadable_file() -> None:
    one = {"unreadable": [{"path": "x/1.png", "reason": "the image file is empty (0 bytes)"}]}
    assert unreadable_summary(one) == "1 unreadable file left out: x/1.png (the image file is empty (0 bytes))"
    assert unreadable_summary({"unreadable": []}) is None


def _plain(value: object) -> None:
    """Every key and value of an inspect report is a builtin JSON type (no numpy scalars, whose repr leaks)."""
    assert type(value) in (dict, list, str, int, float, bool, type(None)), (type(value), value)
    if isinstance(value, dict):
        assert all(type(k) is str for k in value), list(value)
        for v in value.values():
            _plain(v)
    elif isinstance(value, list):
        for v in value:
            _plain(v)


def test_a_fold_set_is_counted_per_fold_and_in_distinct_images(tmp_path: Path, make_config, img) -> None:
    root = tmp_path / "folds"
    images = [(cls, i) for cls in ("neg", "pos") for i in range(6)]  # 12 images, each in all 3 folds
    for k in range(3):
        for cls, i in images:
            split = "test" if i % 3 == k else "valid" if i % 3 == (k + 1) % 3 else "train"
            img.write(root / f"Fold{k}" / split / cls / f"{cls}{i}.png", seed=10 * len(cls) + i)
    report = inspect_dataset(make_config({"type": "folds", "path": str(root)}), out=tmp_path / "ins")
    _plain(report)
    assert report["n_images"] == 12 and report["per_class"] == {"neg": 6, "pos": 6}
    assert report["fold_set"] == {"n_folds": 3, "n_entries": 36, "folds_per_image": {"min": 3, "max": 3}}
    assert "by_split" not in report["counts"]  # per-split totals would count each image three times
    assert report["counts"]["by_fold"]["1"] == {"train": {"neg": 2, "pos": 2}, "val": {"neg": 2, "pos": 2},
                                                "test": {"neg": 2, "pos": 2}}
    assert sum(report["files"]["sizes"].values()) == 12  # file statistics of distinct images too
    lines = report_lines(report)
    assert lines[0] == "folds source: 12 distinct images, each in 3 folds; 36 entries in 3 folds"
    assert "  fold 0: train neg 2, pos 2; val neg 2, pos 2; test neg 2, pos 2" in lines
    assert "np." not in "\n".join(lines) and json.loads(json.dumps(report)) == report
    (root / "Fold2" / "valid" / "neg" / "neg0.png").unlink()  # one image now in two of the three folds
    fewer = inspect_dataset(make_config({"type": "folds", "path": str(root)}))
    assert fewer["n_images"] == 12 and fewer["fold_set"]["folds_per_image"] == {"min": 2, "max": 3}
    assert report_lines(fewer)[0] == "folds source: 12 distinct images, each in 2 to 3 folds; 35 entries in 3 folds"


def test_multilabel_counts_images_carrying_each_label_and_patients_per_label(tmp_path: Path, make_config,
                                                                             img) -> None:
    rows = ["path,label,split,patient_id"]
    labels = ["edema", "mass", "edema|mass", ""]
    for i in range(12):
        img.write(tmp_path / "img" / f"{i}.png", seed=i)
        rows.append(f"img/{i}.png,{labels[i % 4]},{'test' if i >= 8 else 'train'},p{i // 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    source = {"type": "csv", "path": str(tmp_path / "labels.csv"), "multilabel": True}
    report = inspect_dataset(make_config(source))
    _plain(report)
    assert report["task"] == "multilabel" and report["classes"] == ["edema", "mass"]
    assert report["counts"]["by_split"] == {"train": {"edema": 4, "mass": 4}, "test": {"edema": 2, "mass": 2}}
    assert report["counts"]["images_by_split"] == {"train": 8, "test": 4}
    # patient p<j> holds images 2j and 2j+1: edema (i % 4 in 0, 2) and mass (i % 4 in 1, 2) reach every patient
    assert report["patients_per_class"] == {"edema": 6, "mass": 6}
    text = "\n".join(report_lines(report))
    assert "None" not in text and "np." not in text
    assert "  train: 8 images, carrying edema 4, mass 4" in text
    assert "  patients: 6, per label edema 6, mass 6" in text


def test_a_splits_tree_prints_plain_counts_per_split(tmp_path: Path, make_config, img) -> None:
    root = tmp_path / "splits"
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                img.write(root / split / cls / f"{i}.png", seed=100 * len(split) + 10 * ord(cls) + i)
    report = inspect_dataset(make_config({"type": "splits", "path": str(root)}))
    _plain(report)
    assert report["n_images"] == 10 and report["fold_set"] is None
    assert report["counts"]["by_split"] == {"train": {"a": 3, "b": 3}, "test": {"a": 2, "b": 2}}
    lines = report_lines(report)
    assert lines == ["splits source: 10 images", "  multiclass, 2 classes: a, b; imbalance ratio 1.000",
                     "  images per class: a 5, b 5", "  train: 6 images, a 3, b 3", "  test: 4 images, a 2, b 2",
                     "  image sizes 16x16 (10), 1 distinct; modes L (10); bit depths 8-bit (10)"]
