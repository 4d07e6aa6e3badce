"""The real CLI on medical layouts: a patient tree run with patient-level metrics and audit.json, a patient and
study CSV run with vote aggregation, a multi-label CSV run, ``medclf audit --json`` finding planted leakage,
``medclf inspect``, the leakage policy (duplicates and patient overlap), and skipped.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from medclf.cli import app

# these runs' reports are read for their text and tables; each figure is still built, and drawn for real elsewhere (figure_stub.py)
pytestmark = pytest.mark.usefixtures("figures_not_drawn")
runner = CliRunner()


def _img(kind: int, rng: np.random.Generator) -> np.ndarray:
    img = rng.integers(0, 60, (16, 16), dtype=np.uint8)
    if kind:
        img[4:12, 4:12] = 220
    return img


@pytest.fixture(scope="module")
def mura(tmp_path_factory) -> Path:
    """train/valid/<part>/<patient>/<study>_<label>/: 12 train and 4 valid patients, 2 images per study."""
    root = tmp_path_factory.mktemp("mura")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("valid", 4)):
        for p in range(n):
            label = ("negative", "positive")[p % 2]
            folder = root / split / "XR_HAND" / f"patient{split}{p:02d}" / f"study1_{label}"
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(_img(p % 2, rng)).save(folder / f"image{i}.png")
    return root


def _config(tmp_path: Path, source: dict, **extra) -> Path:
    cfg = {"name": "med", "data": {"source": source, "image_size": 16, "cache_dir": str(tmp_path / "cache")},
           "model": {"name": "test_resnet"}, "training": {"epochs": 1, "batch_size": 8, "device": "cpu"},
           "cv": {"n_folds": 2, "val_fraction": 0.34}} | extra
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_patient_tree_run_reports_patient_level_metrics(mura: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = runner.invoke(app, ["run", str(_config(tmp_path, {"type": "patients", "path": str(mura)})),
                               "--out", str(out), "--quiet"])
    assert done.exit_code == 0, done.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "multiclass"
    patient = summary["metrics"]["holdout"]["patient"]
    assert {"accuracy", "balanced_accuracy", "f1_macro", "auc_macro", "n_patients"} <= set(patient)
    assert patient["n_patients"]["folds"] == [6, 6]
    assert "study" in summary["metrics"]["holdout"]
    rows = list(csv.DictReader((out / "folds.csv").open()))
    assert {"patient_accuracy", "patient_f1_macro", "patient_auc_macro"} <= set(rows[0])
    unit_rows = list(csv.DictReader((out / "fold-0" / "patient_predictions.csv").open()))
    assert list(unit_rows[0]) == ["split", "patient_id", "label", "prob_negative", "prob_positive", "predicted",
                                  "n_images"]
    assert {r["n_images"] for r in unit_rows} == {"2"}
    audit = json.loads((out / "audit.json").read_text())
    assert audit["policy"] == "warn" and audit["patient_overlap"]["count"] == 0
    assert [f["patient"] for f in audit["folds"]] == [0, 0]
    for level in ("patient", "study"):  # the report shows both levels, with the numbers of summary.json
        table = list(csv.DictReader((out / "tables" / f"{level}-metrics-holdout.csv").open()))
        accuracy = next(r for r in table if r["metric"] == "accuracy")
        mean = summary["metrics"]["holdout"][level]["accuracy"]["mean"]
        assert float(next(v for k, v in accuracy.items() if k.startswith("mean"))) == pytest.approx(mean)
    assert "holdout: study level" in (out / "report.html").read_text()


def _leaky_splits(root: Path) -> Path:
    """root/{train,test}/<class>: 6 train images per class; test holds 2 copies of training images."""
    rng = np.random.default_rng(1)
    for c, cls in enumerate(("neg", "pos")):
        for i in range(6):
            arr = _img(c, rng)
            (root / "train" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / "train" / cls / f"{i}.png")
            if i == 0:
                (root / "test" / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / "test" / cls / "copy.png")  # leaked into test
        (root / "test" / cls / "fresh.png").parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_img(c, rng)).save(root / "test" / cls / "fresh.png")
    return root


def test_audit_json_finds_duplicates_planted_across_train_and_test(tmp_path: Path) -> None:
    root = _leaky_splits(tmp_path / "leaky")
    done = runner.invoke(app, ["audit", str(root), "--json", "-o", f"data.cache_dir={tmp_path / 'cache'}",
                               "-o", "cv.n_folds=2"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    exact = report["exact_duplicates"]
    assert exact["count"] == 2 and exact["across"] == 2 and exact["within"] == 0
    assert sorted(exact["groups"]) == [["test/neg/copy.png", "train/neg/0.png"],
                                       ["test/pos/copy.png", "train/pos/0.png"]]
    assert {"count", "within", "across", "n_images", "pairs"} <= set(report["near_duplicates"])
    assert "patient_overlap" in report


def test_audit_says_why_folds_were_not_audited(tmp_path: Path) -> None:
    root = _leaky_splits(tmp_path / "leaky")  # 6 training images per class: too few for 10 folds
    done = runner.invoke(app, ["audit", str(root), "--json", "-o", f"data.cache_dir={tmp_path / 'cache'}",
                               "-o", "cv.n_folds=10"])
    assert done.exit_code == 0, done.output
    assert done.stderr.startswith("folds not audited (cv cannot make them: ") and "cv.n_folds" in done.stderr
    report = json.loads(done.stdout)  # the notice is on stderr: stdout stays one JSON object
    assert "folds" not in report and report["exact_duplicates"]["across"] == 2  # the splits still audited


def test_leakage_fail_refuses_and_drop_duplicates_drops(tmp_path: Path) -> None:
    root = _leaky_splits(tmp_path / "leaky")
    cfg = _config(tmp_path, {"type": "splits", "path": str(root)}, audit={"leakage": "fail"})
    refused = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "a"), "--quiet"])
    assert refused.exit_code == 2 and "leakage audit found" in refused.output
    assert json.loads((tmp_path / "a" / "audit.json").read_text())["exact_duplicates"]["across"] == 2
    done = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "b"), "--quiet",
                               "-o", "audit.leakage=drop_duplicates"])
    assert done.exit_code == 0, done.output
    splits = json.loads((tmp_path / "b" / "splits.json").read_text())
    dropped = json.loads((tmp_path / "b" / "audit.json").read_text())["dropped"]
    for f in splits["folds"]:  # a copy stays only where its original is not trained on
        for cls in ("neg", "pos"):
            assert (f"test/{cls}/copy.png" in f["test"]) != (f"train/{cls}/0.png" in f["train"])
        assert dropped[str(f["fold"])] == 2 - sum("copy" in i for i in f["test"])
    assert sum(dropped.values()) >= 1


@pytest.fixture(scope="module")
def patient_csv(tmp_path_factory) -> Path:
    """m.csv (path, label, patient_id, study_id, split): 16 patients (P0-P9 train, P10-P12 val, P13-P15 test),
    2 studies of 2 images each; leaky.csv: the same plus one more image of training patient P0 in test."""
    root = tmp_path_factory.mktemp("pcsv")
    rng = np.random.default_rng(4)
    rows, n = ["path,label,patient_id,study_id,split"], 0
    for p in range(16):
        split = "train" if p < 10 else ("val" if p < 13 else "test")
        for study in range(2):
            for _ in range(2):
                Image.fromarray(_img(p % 2, rng)).save(root / f"{n}.png")
                rows.append(f"{n}.png,{('neg', 'pos')[p % 2]},P{p},P{p}-S{study},{split}")
                n += 1
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    Image.fromarray(_img(0, rng)).save(root / "late.png")
    (root / "leaky.csv").write_text("\n".join([*rows, "late.png,neg,P0,P0-S9,test"]) + "\n")
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_vote_aggregation_and_study_columns_in_folds_csv(patient_csv: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"type": "csv", "path": str(patient_csv / "m.csv")}, cv={"mode": "holdout"},
                  evaluation={"patient_aggregation": "vote"})
    out = tmp_path / "run"
    done = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--quiet"])
    assert done.exit_code == 0, done.output
    patient_of = {r["path"]: r["patient_id"] for r in _rows(patient_csv / "m.csv")}
    images = _rows(out / "fold-0" / "predictions.csv")
    for unit in _rows(out / "fold-0" / "patient_predictions.csv"):
        mine = [r for r in images if r["split"] == unit["split"] and patient_of[r["id"]] == unit["patient_id"]]
        assert int(unit["n_images"]) == len(mine) == 4
        votes = sum(r["predicted"] == "pos" for r in mine) / len(mine)  # vote: the share predicted positive
        assert float(unit["prob_pos"]) == pytest.approx(votes)
        mean = np.mean([float(r["prob_pos"]) for r in mine])
        assert votes == mean or float(unit["prob_pos"]) != pytest.approx(mean)  # not the mean probability
    summary = json.loads((out / "summary.json").read_text())
    folds = {r["split"]: r for r in _rows(out / "folds.csv") if r["fold"] == "0"}
    assert set(folds) == {"val", "test"}
    for split, row in folds.items():
        study = summary["metrics"][split]["study"]
        assert study["n_studies"]["folds"] == [6.0]  # 3 patients x 2 studies in val and in test
        for name in ("accuracy", "f1_macro", "auc_macro"):
            expected = study[name]["folds"][0]
            assert (row[f"study_{name}"] == "") if expected is None else float(row[f"study_{name}"]) == (
                pytest.approx(expected))
    studies = _rows(out / "fold-0" / "study_predictions.csv")
    assert {r["split"] for r in studies} == {"val", "test"} and {r["n_images"] for r in studies} == {"2"}
    assert sorted(r["study_id"] for r in studies if r["split"] == "test") == [
        f"P{p}-S{s}" for p in (13, 14, 15) for s in (0, 1)]


def test_leakage_fail_refuses_a_run_whose_patient_is_in_train_and_test(patient_csv: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"type": "csv", "path": str(patient_csv / "leaky.csv")}, cv={"mode": "holdout"},
                  audit={"leakage": "fail"})
    out = tmp_path / "run"
    refused = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--quiet"])
    assert refused.exit_code == 2, refused.output
    assert "leakage audit found" in refused.output and "1 patient" in refused.output
    assert "Traceback" not in refused.output
    audit = json.loads((out / "audit.json").read_text())
    assert audit["policy"] == "fail" and audit["exact_duplicates"]["count"] == 0  # refused for the patient only
    assert audit["patient_overlap"]["patients"] == {"P0": ["test", "train"]}
    assert not (out / "fold-0").exists() and not (out / "summary.json").exists()


def test_skipped_csv_lists_every_skipped_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    rng = np.random.default_rng(5)
    for split, n in (("train", 6), ("test", 2)):
        for c, cls in enumerate(("neg", "pos")):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_img(c, rng)).save(root / split / cls / f"{i}.png")
    good = (root / "train" / "neg" / "0.png").read_bytes()
    bad = {"train/neg/zero-a.png": b"", "train/neg/zero-b.png": b"", "test/pos/zero-c.png": b"",
           "train/neg/truncated.png": good[: len(good) // 2], "train/pos/text.jpg": b"not an image",
           "train/pos/broken.dcm": b"garbage" * 30}
    for name, content in bad.items():
        (root / name).write_bytes(content)
    (root / "train" / "pos" / "Thumbs.db").write_bytes(b"x")  # ignored, never skipped
    (root / "train" / "pos" / ".hidden.png").write_bytes(b"")
    cfg = _config(tmp_path, {"type": "splits", "path": str(root)}, cv={"mode": "holdout", "val_fraction": 0.34})
    out = tmp_path / "run"
    done = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--quiet", "-o", "data.on_bad_image=skip"])
    assert done.exit_code == 0, done.output
    skipped = _rows(out / "skipped.csv")
    assert sorted(r["path"] for r in skipped) == sorted(bad)  # ids relative to the data root, never machine paths
    assert all(r["reason"] for r in skipped)
    assert {r["reason"] for r in skipped if "zero" in r["path"]} == {
        next(r["reason"] for r in skipped if "zero-a" in r["path"])}  # identical files, each listed
    splits = json.loads((out / "splits.json").read_text())["folds"][0]
    used = {i for ids in splits.values() if isinstance(ids, list) for i in ids}
    assert used and not used & set(bad)


def test_multilabel_csv_run(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    lines = ["path,labels"]
    for i in range(24):
        labels = [n for n, on in zip(("edema", "mass"), (i % 2, (i // 2) % 2)) if on]
        Image.fromarray(_img(i % 2, rng)).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png,{'|'.join(labels)}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path, {"type": "csv", "path": str(tmp_path / "m.csv"), "label_column": "labels",
                             "multilabel": True}, evaluation={"threshold": "tuned"})
    out = tmp_path / "run"
    done = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--quiet", "-o", "cv.test_fraction=0.25"])
    assert done.exit_code == 0, done.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "multilabel"
    assert {"exact_match", "hamming_loss", "f1_samples", "auc_micro", "threshold/mass"} <= set(
        summary["metrics"]["holdout"])
    assert "exact_match" in summary["ensemble"]["test"]
    data = json.loads((out / "data.json").read_text())
    assert data["cooccurrence"]["edema"]["mass"] == 6
    preds = list(csv.DictReader((out / "fold-0" / "predictions.csv").open()))
    assert list(preds[0]) == ["split", "id", "label", "prob_edema", "prob_mass", "predicted"]
    assert {p["label"] for p in preds} <= {"", "edema", "mass", "edema|mass"}


def test_inspect_writes_json_and_sample_grids(mura: Path, tmp_path: Path) -> None:
    (mura / "train" / "XR_HAND" / "patienttrain00" / "study1_negative" / "bad.png").write_bytes(b"")
    try:
        done = runner.invoke(app, ["inspect", str(mura), "--out", str(tmp_path / "ins"),
                                   "-o", f"data.cache_dir={tmp_path / 'cache'}"])
    finally:
        (mura / "train" / "XR_HAND" / "patienttrain00" / "study1_negative" / "bad.png").unlink()
    assert done.exit_code == 0, done.output
    report = json.loads((tmp_path / "ins" / "inspect.json").read_text())
    assert report["source"] == "patients" and report["n_patients"] == 16
    assert report["counts"]["by_split"]["train"] == {"negative": 12, "positive": 12}
    assert report["patients_per_class"] == {"negative": 8, "positive": 8} and report["imbalance_ratio"] == 1.0
    assert report["files"]["sizes"] == {"16x16": 32} and report["files"]["bit_depths"] == {"8": 32}
    assert [u["path"] for u in report["unreadable"]] == ["train/XR_HAND/patienttrain00/study1_negative/bad.png"]
    assert "1 unreadable file left out: train/XR_HAND/patienttrain00/study1_negative/bad.png (" in done.stdout
    assert (tmp_path / "ins" / "samples_negative.png").is_file()


def test_predefined_folds_run_uses_those_folds(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "folds"
    for k in range(2):
        for split, n in (("train", 6), ("valid", 2), ("test", 3)):
            for c, cls in enumerate(("neg", "pos")):
                (root / f"Fold{k}" / split / cls).mkdir(parents=True)
                for i in range(n):
                    Image.fromarray(_img(c, rng)).save(root / f"Fold{k}" / split / cls / f"{i}.png")
    out = tmp_path / "run"
    done = runner.invoke(app, ["run", str(_config(tmp_path, {"type": "folds", "path": str(root)})),
                               "--out", str(out), "--quiet", "-o", "cv.n_folds=5"])
    assert done.exit_code == 0, done.output
    splits = json.loads((out / "splits.json").read_text())["folds"]
    assert len(splits) == 2  # the data's two folds, not cv.n_folds
    assert all(i.startswith("Fold1/test/") for i in splits[1]["holdout"]) and len(splits[1]["holdout"]) == 6
    assert all(i.startswith("Fold0/valid/") for i in splits[0]["val"])
    inspect = runner.invoke(app, ["inspect", str(root), "--json", "--out", str(tmp_path / "ins"),
                                  "-o", f"data.cache_dir={tmp_path / 'cache'}"])
    assert inspect.exit_code == 0, inspect.output
    report = json.loads(inspect.stdout)
    assert report["source"] == "folds" and report["counts"]["by_fold"]["1"]["test"] == {"neg": 3, "pos": 3}
