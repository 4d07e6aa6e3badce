"""A subset of folds (``--folds``, ``cv.folds``) and a re-split by patient (``cv.resplit_by_patient``), through the
real CLI on tiny data: which folds train, what the summary and report say, that a later run resumes, and that the
audit of re-split data finds no patient in two splits.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from figure_stub import skip_drawing
from medclf.cli import app

runner = CliRunner()


def _read(path: Path):
    return json.loads(path.read_text())


def _error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


# ------------------------------------------------------------------------------------ a subset of folds
def test_a_subset_of_folds_runs_only_those_and_a_later_run_resumes_the_rest(
    tiny_config: Path, trained_run: Path, tmp_path: Path, tiny_splits: Path
) -> None:
    out = tmp_path / "run"
    fast = ["-o", "training.epochs=1"]
    first = runner.invoke(app, ["run", str(tiny_config), "--out", str(out), "--quiet", "--folds", "1", *fast])
    assert first.exit_code == 0, first.output
    assert not (out / "fold-0").exists() and (out / "fold-1" / "complete.json").is_file()
    summary = _read(out / "summary.json")
    assert summary["folds"] == {"run": [1], "n_folds": 2}
    with open(out / "folds.csv", newline="") as handle:
        assert {row["fold"] for row in csv.DictReader(handle)} == {"1"}
    # fold 1 is the full study's fold 1: made in full, then selected
    assert _read(out / "splits.json")["folds"] == [_read(trained_run / "splits.json")["folds"][1]]
    assert _read(out / "fold-1" / "complete.json")["n_folds"] == 2
    report = (out / "report.html").read_text()
    assert "folds 1 of 2 (cv.folds)" in report and "2-fold cross-validation" in report
    predicted = runner.invoke(app, ["predict", str(out), str(tiny_splits / "test" / "circle"),
                                    "--out", str(tmp_path / "p.csv")])  # the folds not run are not "missing"
    assert predicted.exit_code == 0, predicted.output

    fold1 = {p.name: p.read_bytes() for p in (out / "fold-1").iterdir()}
    with pytest.MonkeyPatch.context() as patch:  # a whole 2-fold run's figures: trained_run draws them
        skip_drawing(patch)
        second = runner.invoke(app, ["run", str(tiny_config), "--out", str(out), "--quiet", *fast])  # cv.folds: runtime
    assert second.exit_code == 0, second.output
    assert {p.name: p.read_bytes() for p in (out / "fold-1").iterdir()} == fold1  # resumed, not retrained
    assert (out / "fold-0" / "complete.json").is_file()
    summary = _read(out / "summary.json")
    assert summary["folds"] == {"run": [0, 1], "n_folds": 2} and "test" in summary["ensemble"]
    assert "2 complete" in (out / "report.html").read_text()


def test_bad_fold_selections_name_the_valid_indices(tiny_config: Path, tmp_path: Path) -> None:
    text = _error(runner.invoke(app, ["run", str(tiny_config), "--out", str(tmp_path / "a"), "--folds", "0,x"]))
    assert "cv.folds: takes fold indices separated by commas" in text and "0 to 1 with cv.n_folds: 2" in text
    text = _error(runner.invoke(app, ["run", str(tiny_config), "--out", str(tmp_path / "b"), "--folds", "0,5"]))
    assert "cv.folds (--folds) asks for fold 5, but the study has 2 folds, numbered 0, 1." in text
    assert not list((tmp_path / "b").glob("fold-*"))


def test_predefined_folds_run_the_selected_fold_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "folds"
    for k in range(3):
        for split, n in (("train", 4), ("valid", 2), ("test", 2)):
            for c, cls in enumerate(("neg", "pos")):
                (root / f"Fold{k}" / split / cls).mkdir(parents=True)
                for i in range(n):
                    img = rng.integers(0, 60, (16, 16), dtype=np.uint8)
                    img[4:12, 4:12] += 160 * c
                    Image.fromarray(img).save(root / f"Fold{k}" / split / cls / f"{i}.png")
    out = tmp_path / "run"
    config = _config(tmp_path, {"type": "folds", "path": str(root)}, cv={"folds": [2]})
    done = runner.invoke(app, ["run", str(config), "--out", str(out), "--quiet"])
    assert done.exit_code == 0, done.output
    assert [p.name for p in out.glob("fold-*")] == ["fold-2"]
    (fold,) = _read(out / "splits.json")["folds"]
    assert fold["fold"] == 2 and all(i.startswith("Fold2/test/") for i in fold["holdout"])
    assert _read(out / "summary.json")["folds"] == {"run": [2], "n_folds": 3}


# ------------------------------------------------------------------------------ re-split by patient
def _config(tmp_path: Path, source: dict, cv: dict | None = None) -> Path:
    cfg = {"name": "subset", "seed": 0,
           "data": {"source": source, "image_size": 16, "cache_dir": str(tmp_path / "cache")},
           "model": {"name": "test_resnet"}, "training": {"epochs": 1, "batch_size": 8, "device": "cpu"},
           "cv": {"n_folds": 2, "val_fraction": 0.34} if cv is None else cv}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _manifest(tiny_splits: Path, root: Path, *, leak: str) -> Path:
    """tiny_splits' images as a CSV with patient ids, two images a patient; ``leak`` ("test" or "val"): one patient
    of each class has one image in train and the other there."""
    rows = []
    for kind in sorted(p.name for p in (tiny_splits / "train").iterdir() if p.is_dir()):
        files = sorted((tiny_splits / "train" / kind).glob("*.png")) + sorted((tiny_splits / "test" / kind).glob("*.png"))
        for i, source in enumerate(files):  # 10 train then 4 test images of the class
            target = root / kind / f"{i}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
            split = "train" if i < 10 else "test"
            if leak == "val" and i in (6, 7):
                split = "val"
            rows.append({"path": f"{kind}/{i}.png", "label": kind, "split": split, "patient_id": f"{kind}-{i // 2}"})
        # the leak: image 10 (test) or image 5 (train) joins the patient of the two images before it
        rows[-4 if leak == "test" else -9]["patient_id"] = f"{kind}-4" if leak == "test" else f"{kind}-3"
    path = root / "images.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "split", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_resplit_by_patient_leaves_no_patient_in_two_splits_of_a_leaking_test_split(
    tiny_splits: Path, tmp_path: Path
) -> None:
    config = _config(tmp_path, {"type": "csv", "path": str(_manifest(tiny_splits, tmp_path / "data", leak="test"))})
    audited = [runner.invoke(app, ["audit", str(config), "--json", *extra])
               for extra in ([], ["-o", "cv.resplit_by_patient=true"])]
    assert all(a.exit_code == 0 for a in audited), [a.output for a in audited]
    before, after = (json.loads(a.stdout.splitlines()[-1])["patient_overlap"] for a in audited)
    assert before["count"] == 3 and before["pairs"] == {"test|train": 3}  # one patient of each class
    assert after["count"] == 0
    text = runner.invoke(app, ["audit", str(config)])  # the text report names the key that fixes it
    assert text.exit_code == 0 and "patients in several splits: 3 (test|train 3)" in text.stdout
    fixes = " ".join(text.stdout.split()).partition("to fix: ")[2]
    assert "the data's own splits share 3 patients: set cv.resplit_by_patient: true" in fixes


def test_resplit_by_patient_keeps_a_clean_test_split_and_records_the_moves(tiny_splits: Path, tmp_path: Path) -> None:
    manifest = _manifest(tiny_splits, tmp_path / "data", leak="val")
    config = _config(tmp_path, {"type": "csv", "path": str(manifest)},
                     cv={"mode": "holdout", "resplit_by_patient": True})  # the data's own (re-split) val
    out = tmp_path / "run"
    done = runner.invoke(app, ["run", str(config), "--out", str(out), "--quiet"])
    assert done.exit_code == 0, done.output
    audit = _read(out / "audit.json")
    assert audit["patient_overlap"]["count"] == 0 and audit["locations"]["test"] == 12
    with open(manifest, newline="") as handle:
        given_test = sorted(r["path"] for r in csv.DictReader(handle) if r["split"] == "test")
    assert sorted(_read(out / "splits.json")["folds"][0]["test"]) == given_test
    moved = _read(out / "splits.json")["resplit"]
    assert moved["test_unchanged"] is True and moved["n_images_moved"] > 0
    assert moved["splits"]["test"] == {"before": 12, "after": 12, "images_in": 0, "images_out": 0,
                                       "patients_in": 0, "patients_out": 0}
    assert moved["splits"]["val"]["before"] == 6


@pytest.mark.parametrize("source", ["splits", "csv-without-patients"])
def test_resplit_by_patient_without_patient_ids_names_where_they_come_from(
    source: str, tiny_splits: Path, tmp_path: Path
) -> None:
    if source == "splits":
        data = {"type": "splits", "path": str(tiny_splits)}
    else:
        manifest = _manifest(tiny_splits, tmp_path / "data", leak="test")
        manifest.write_text("\n".join(",".join(line.split(",")[:3]) for line in manifest.read_text().splitlines()))
        data = {"type": "csv", "path": str(manifest)}
    config = _config(tmp_path, data, cv={"n_folds": 2, "resplit_by_patient": True})
    text = _error(runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]))
    assert "cv.resplit_by_patient: true moves whole patients" in text and "data.source.patient_column" in text
