"""Bad input through the real command line: each is named (file, line, class or value), never a traceback.

The unit tests of tests/data/ pin each rule; these check that the command a user types says it in one paragraph.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from reliability_harness import assert_clean_refusal, read_csv


def _csv_study(reference, tmp_path: Path, rows: list[str], **source) -> Path:
    """A csv-source copy of the tiny study: images copied next to ``labels.csv``, whose body is ``rows``."""
    data = tmp_path / "data"
    shutil.copytree(reference.images.parent, data)
    (data / "labels.csv").write_bytes(("path,label,split\n" + "".join(r + "\n" for r in rows)).encode("latin-1"))
    cfg = yaml.safe_load(reference.config.read_text())
    cfg["data"]["source"] = {"type": "csv", "path": str(data / "labels.csv"), **source}
    config = tmp_path / "csv.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return config


def _rows(reference) -> list[str]:
    return [f"{p.relative_to(reference.images.parent).as_posix()},{p.parent.name},{p.parent.parent.name}"
            for p in sorted(reference.images.parent.glob("*/*/*.png"))]


def test_a_csv_label_typo_names_the_odd_label_not_an_index(cli, reference, tmp_path):
    rows = _rows(reference)
    typo = rows.index("train/blank/blank_0.png,blank,train")
    rows[typo] = rows[typo].replace(",blank,", ",blnak,")  # one typo: a training class of one image
    done = cli("run", _csv_study(reference, tmp_path, rows), "--out", tmp_path / "run", "--quiet")
    assert_clean_refusal(done, "blnak")
    assert "class 1" not in done.stderr and "class index" not in done.stderr


def test_a_csv_that_is_not_utf8_names_the_line(cli, reference, tmp_path):
    rows = _rows(reference)
    rows[4] = rows[4].replace(",test", ",t\xe9st")  # a latin-1 byte on line 6 (the header is line 1)
    done = cli("run", _csv_study(reference, tmp_path, rows), "--out", tmp_path / "run", "--quiet")
    assert_clean_refusal(done, "labels.csv", "line 6")


def test_a_csv_path_outside_its_folder_is_refused_unless_allowed(cli, reference, tmp_path):
    rows = _rows(reference) + ["../elsewhere.png,blank,train"]
    for folder in (tmp_path, tmp_path / "allowed"):
        folder.mkdir(exist_ok=True)
        shutil.copy(next(reference.images.glob("*/*.png")), folder / "elsewhere.png")
    refused = cli("run", _csv_study(reference, tmp_path, rows), "--out", tmp_path / "run", "--quiet")
    assert_clean_refusal(refused, "../elsewhere.png", "allow_outside_paths")

    allowed = _csv_study(reference, tmp_path / "allowed", rows, allow_outside_paths=True)
    done = cli("run", allowed, "--out", tmp_path / "run2", "--quiet", no_report=True)
    assert done.returncode == 0, done
    ids = [r["id"] for r in read_csv(tmp_path / "run2" / "fold-0" / "predictions.csv")]
    ids += [i for fold in json.loads((tmp_path / "run2" / "splits.json").read_text())["folds"]
            for part in ("train", "val", "holdout", "test") for i in fold[part]]
    assert ids and not any(i.startswith("/") or str(tmp_path) in i for i in ids)  # never a machine path


def test_images_far_smaller_than_image_size_are_counted_and_warned_about(cli, reference, tmp_path):
    cfg = yaml.safe_load(reference.config.read_text())
    cfg["data"]["image_size"] = 64  # the 16 px images are enlarged 4x
    config = tmp_path / "big.yaml"
    config.write_text(yaml.safe_dump(cfg))
    done = cli("run", config, "--out", tmp_path / "run", "--quiet", no_report=True)
    assert done.returncode == 0, done
    small = json.loads((tmp_path / "run" / "data.json").read_text())["small_images"]
    assert small["count"] == 42 and len(small["first"]) > 0
    assert "42 images are enlarged" in " ".join(done.output.split()), done


def test_inspect_names_the_unreadable_files_and_counts_them(cli, reference, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(reference.images.parent, data)
    for i in range(5):
        (data / "train" / "blank" / f"broken_{i}.png").write_bytes(b"not a png")
    done = cli("inspect", data, "--out", tmp_path / "inspect")
    assert done.returncode == 0, done
    text = " ".join(done.output.split())
    assert "5" in text and "broken_0.png" in text, done


def _dicom(path: Path, seed: int, patient: str) -> None:
    """A 16x16 MONOCHROME2 DICOM file with its own pixels and a PatientID."""
    from dicom_files import random_pixels, write_dicom

    write_dicom(path, random_pixels(seed), PatientID=patient)


def test_a_dicom_patient_in_two_split_folders_is_reported_by_audit(cli, tmp_path):
    """Folders that are not patients: patient P1 has a folder in train and one in test; the header tells."""
    root = tmp_path / "dicom"
    entries = {"train": [("a", "2020-01", "P1"), ("a", "2020-01", "P2"), ("b", "2020-02", "P3"), ("b", "2020-02", "P4")],
               "test": [("a", "2020-09", "P1"), ("b", "2020-09", "P5")]}
    for n, (split, cls, folder, patient) in enumerate((s, *e) for s, rows in entries.items() for e in rows):
        _dicom(root / split / cls / folder / f"{patient}-{n}.dcm", n, patient)
    done = cli("audit", root, "--json")
    assert done.returncode == 0, done
    overlap = json.loads(done.stdout)["patient_overlap"]
    assert overlap["patients"] == {"P1": ["test", "train"]} and overlap["n_patients"] == 5
