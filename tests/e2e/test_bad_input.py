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


# ------------------------------------------------------------ medclf validate: what is checked before training
def _fold_folders(root: Path) -> Path:
    for k in range(3):
        for split in ("train", "valid", "test"):
            for cls in ("glaucoma", "normal"):
                (root / f"Fold{k}" / split / cls).mkdir(parents=True)
                (root / f"Fold{k}" / split / cls / f"{k}.png").write_bytes(b"")  # validate lists folders only
    return root


def _validate(tmp_path: Path, config: dict, *args: str):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return runner.invoke(app, ["validate", str(path), *args])


@pytest.mark.parametrize(("problem", "expected"), [
    ("missing path", "data.source.path: '{tmp}/nowhere' does not exist; data.source.type 'folder' reads a folder with "
                     "one sub-folder of images per class (root/<class>/<image>)."),
    ("folds as folder", "data.source.type: 'folder' reads a folder with one sub-folder of images per class "
                        "(root/<class>/<image>), but '{tmp}/fundus' looks like a 'folds' layout (Fold0..Fold2, each "
                        "with train/valid/test): write data.source.type: folds."),
    ("label_columns", "data.source.label_columns: ['effusion', 'nodule'] and data.source.label_column 'findings' are "
                      "both set;"),
    ("n_folds with folds", "cv.n_folds: 2 is not used: the study runs every one of the data's own folds "
                           "(data.source.type: folds). To run some of them set cv.folds (medclf run --folds 0,3); "
                           "remove cv.n_folds."),
    ("cuda", "training.device: 'cuda' is not on this machine (no CUDA device is available). Available here: auto, cpu."),
    ("type typo", "data.source.type: 'fold' is not a data source type. Did you mean 'folds'? Choose one of: folder, "
                  "splits, npz, csv, synthetic, folds, patients."),
    ("override index", "Override 'training.stages.2.lr=0.01': training.stages has 2 element(s), so there is no index "
                       "2; valid indices: 0, 1."),
])
def test_validate_prints_each_problem_as_one_paragraph(tmp_path: Path, monkeypatch, problem: str, expected: str):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a machine with a GPU
    folds = {"type": "folds", "path": str(_fold_folders(tmp_path / "fundus"))}
    csv = tmp_path / "labels.csv"
    csv.write_text("path,effusion,nodule,findings\n")
    config, args = {"data": {"source": folds}}, []
    if problem == "missing path":
        config["data"]["source"] = {"type": "folder", "path": "nowhere"}  # relative to the config's folder
    elif problem == "folds as folder":
        config["data"]["source"] = folds | {"type": "folder"}
    elif problem == "label_columns":
        config["data"]["source"] = {"type": "csv", "path": str(csv), "label_columns": ["effusion", "nodule"],
                                    "label_column": "findings", "multilabel": True}
    elif problem == "n_folds with folds":
        config["cv"] = {"n_folds": 2}
    elif problem == "cuda":
        config["training"] = {"device": "cuda"}
    elif problem == "type typo":
        config["data"]["source"] = folds | {"type": "fold"}
    else:
        config["training"] = {"stages": [{"epochs": 1}, {"epochs": 1}]}
        args = ["-o", "training.stages.2.lr=0.01"]
    done = _validate(tmp_path, config, *args)
    assert done.exit_code == 2, done.output
    assert done.stdout == "" and "Traceback" not in done.output
    paragraph = done.stderr.strip()
    assert "\n" not in paragraph and paragraph.startswith("error: ")
    assert expected.format(tmp=tmp_path) in paragraph


def test_validate_names_a_key_the_layout_ignores_and_still_passes(tmp_path: Path):
    config = {"data": {"source": {"type": "folds", "path": str(_fold_folders(tmp_path / "fundus"))}},
              "cv": {"val_fraction": 0.3}}
    with pytest.warns(Warning, match=r"^cv\.val_fraction: 0\.3 is not used with predefined folds") as caught:
        done = _validate(tmp_path, config)
    assert done.exit_code == 0, done.output
    assert [w.category.__name__ for w in caught] == ["ConfigWarning"]
    assert "type: folds" in done.stdout and "val_fraction: 0.3" in done.stdout


def test_validate_with_an_index_into_a_list_prints_the_changed_element(tmp_path: Path):
    config = {"data": {"source": {"type": "synthetic"}},
              "model": {"name": "layers", "layers": [{"type": "conv", "filters": 4}, {"type": "maxpool"},
                                                     {"type": "flatten"}]}}
    done = _validate(tmp_path, config, "-o", "model.layers.1.type=avgpool")
    assert done.exit_code == 0, done.output
    layers = yaml.safe_load(done.stdout)["model"]["layers"]
    assert [layer["type"] for layer in layers] == ["conv", "avgpool", "flatten"]
