"""The real CLI on bad input, named: a CSV label typo, an undecodable CSV, a manifest path outside its folder
(each one paragraph, exit 2, before anything is trained), and a DICOM tree whose folders are not patients,
audited by the PatientID in the files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from dicom_files import random_pixels, write_dicom
from medclf.cli import app

runner = CliRunner()


def _manifest(root: Path, rows: list[str]) -> Path:
    rng = np.random.default_rng(0)
    for row in rows:
        path = root / row.split(",")[0]
        if not path.exists() and ".." not in row:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(path)
    csv = root / "labels.csv"
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    return csv


def _run(tmp_path: Path, csv: Path, *args: str):
    cfg = {"name": "bad", "data": {"source": {"type": "csv", "path": str(csv)}, "image_size": 16,
                                   "cache_dir": str(tmp_path / "cache")},
           "model": {"name": "test_resnet"}, "training": {"epochs": 1, "batch_size": 8, "device": "cpu"},
           "cv": {"n_folds": 5, "test_fraction": 0.0}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--quiet", *args])


def _one_paragraph_error(done) -> str:
    assert done.exit_code == 2, done.output
    assert "Traceback" not in done.output
    return " ".join(done.stderr.split())


def test_a_label_typo_is_named_with_its_likely_spelling(tmp_path: Path) -> None:
    rows = [f"img/n{i}.png,normal" for i in range(10)] + [f"img/p{i}.png,pneumonia" for i in range(10)]
    csv = _manifest(tmp_path / "data", rows + ["img/t.png,pneumnia"])
    with pytest.warns(RuntimeWarning, match=r"label 'pneumnia' .* is spelt almost like 'pneumonia'"):
        message = _one_paragraph_error(_run(tmp_path, csv))
    assert "class 'pneumnia' has 1." in message and "Is 'pneumnia' a typo of 'pneumonia'?" in message
    assert not (tmp_path / "run" / "fold-0").exists()


def test_a_latin1_manifest_names_its_line(tmp_path: Path) -> None:
    csv = _manifest(tmp_path / "data", ["a.png,x", "b.png,y"])
    csv.write_bytes(csv.read_bytes() + "c\xe9.png,y\n".encode("latin-1"))
    message = _one_paragraph_error(runner.invoke(app, ["inspect", str(csv), "--out", str(tmp_path / "ins")]))
    assert message.startswith("error: ") and "labels.csv: line 4: byte 0xe9 is not UTF-8" in message


def test_a_manifest_path_outside_its_folder_is_refused_unless_allowed(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "secret.png"
    outside.parent.mkdir()
    Image.fromarray(np.full((16, 16), 7, dtype=np.uint8)).save(outside)
    rows = [f"img/a{i}.png,a" for i in range(3)] + [f"img/b{i}.png,b" for i in range(3)]
    csv = _manifest(tmp_path / "data", [*rows, "../elsewhere/secret.png,b"])
    args = ["inspect", str(csv), "--out", str(tmp_path / "ins"), "-o", f"data.cache_dir={tmp_path / 'cache'}"]
    message = _one_paragraph_error(runner.invoke(app, args))
    assert "line 8: image path '../elsewhere/secret.png' points outside the CSV's folder" in message
    assert "data.source.allow_outside_paths: true" in message
    done = runner.invoke(app, [*args, "-o", "data.source.allow_outside_paths=true", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["n_images"] == 7


def _dicom(path: Path, patient: str, seed: int) -> None:
    write_dicom(path, random_pixels(seed), PatientID=patient)


def test_audit_finds_a_patient_whose_folders_sit_in_two_splits(tmp_path: Path) -> None:
    root = tmp_path / "dicom"
    seed = 0
    for split, patients in (("train", ["P1", "P2", "P3", "P4"]), ("test", ["P1", "P5"])):
        for k, patient in enumerate(patients):
            for _ in range(2):
                seed += 1
                # folders are scan dates, not patients: P1's two folders carry one PatientID
                _dicom(root / split / ("ab"[k % 2]) / f"2021-0{seed % 3}" / f"{seed}.dcm", patient, seed)
    done = runner.invoke(app, ["audit", str(root), "--json", "-o", f"data.cache_dir={tmp_path / 'cache'}",
                               "-o", "cv.n_folds=2"])
    assert done.exit_code == 0, done.output
    overlap = json.loads(done.stdout)["patient_overlap"]
    assert overlap["patients"] == {"P1": ["test", "train"]} and overlap["n_patients"] == 5
