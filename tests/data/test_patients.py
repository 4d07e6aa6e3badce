"""Patient and study ids from DICOM headers (``data.patient_ids``) for layouts that give none: a tree whose
folders are not patients is grouped, split and audited by the PatientID the files carry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

import dicom_files
from medclf.config import CVConfig
from medclf.data import load_dataset
from medclf.data.audit import audit_dataset
from medclf.data.formats import dicom_ids
from medclf.data.splitting import make_folds


def write_dicom(path: Path, seed: int, **attrs) -> Path:
    """A 16x16 MONOCHROME2 DICOM file with distinct pixels per seed and the given attributes (PatientID...)."""
    return dicom_files.write_dicom(path, dicom_files.random_pixels(seed), **attrs)


STUDY = {p: generate_uid() for p in ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8")}


def _dated_tree(root: Path) -> Path:
    """root/<class>/<acquisition date>/<image>.dcm: folders are dates, not patients. P1 (class a) has images in
    two date folders; every other patient has two images in one folder shared with another patient."""
    n = 0
    for patient, cls, folders in [("P1", "a", ["2020-01", "2020-02"]), ("P2", "a", ["2020-01"]),
                                  ("P3", "a", ["2020-02"]), ("P4", "a", ["2020-03"]), ("P5", "b", ["2020-01"]),
                                  ("P6", "b", ["2020-02"]), ("P7", "b", ["2020-03"]), ("P8", "b", ["2020-03"])]:
        for folder in folders:
            for i in range(2):
                n += 1
                write_dicom(root / cls / folder / f"{patient}_{i}.dcm", n, PatientID=patient,
                            StudyInstanceUID=STUDY[patient])
    return root


def test_header_ids_make_one_patient_of_two_folders_and_keep_it_on_one_side(tmp_path: Path, make_config) -> None:
    root = _dated_tree(tmp_path / "tree")
    data = load_dataset(make_config({"type": "folder", "path": str(root)}))  # the default: header
    p1 = np.array(["/P1_" in i for i in data.ids])
    assert p1.sum() == 4 and set(data.groups[p1]) == {"P1"}
    assert len(np.unique(data.groups)) == 8
    assert set(data.studies[p1]) == {STUDY["P1"]}
    for fold in make_folds(data, CVConfig(n_folds=2, val_fraction=0.5, test_fraction=0.0), seed=0):
        sides = [part for part, idx in fold.parts().items() if np.isin(np.flatnonzero(p1), idx).any()]
        assert len(sides) == 1  # all four images of P1 in one part of every fold
    by_folder = load_dataset(make_config({"type": "folder", "path": str(root)}, patient_ids="folder"))
    assert set(by_folder.groups[p1]) == {"2020-01", "2020-02"}  # what the folders alone would have said
    assert load_dataset(make_config({"type": "folder", "path": str(root)}, patient_ids="none")).groups is None


def test_one_patient_in_two_split_folders_is_reported_shared_by_the_audit(tmp_path: Path, make_config) -> None:
    root = tmp_path / "splits"
    n = 0
    for split, entries in {"train": [("a", "f1", "P1"), ("a", "f1", "P2"), ("b", "f2", "P3"), ("b", "f2", "P4")],
                           "test": [("a", "f9", "P1"), ("b", "f9", "P5")]}.items():
        for cls, folder, patient in entries:
            n += 1
            write_dicom(root / split / cls / folder / f"{patient}.dcm", n, PatientID=patient)
    data = load_dataset(make_config({"type": "splits", "path": str(root)}))
    overlap = audit_dataset(data, near=False).report["patient_overlap"]
    assert overlap["count"] == 1 and overlap["patients"] == {"P1": ["test", "train"]}
    assert overlap["n_patients"] == 5
    blind = load_dataset(make_config({"type": "splits", "path": str(root)}, patient_ids="none"))
    assert audit_dataset(blind, near=False).report["patient_overlap"]["count"] == 0  # what it missed before


def test_folder_ids_are_the_folder_below_the_class_in_every_split(tmp_path: Path, make_config, img) -> None:
    root = tmp_path / "splits"
    for k, (split, cls, rel) in enumerate([("train", "a", "p01/x.png"), ("train", "a", "p02/x.png"),
                                           ("train", "b", "p03/s1/x.png"), ("train", "b", "loose.png"),
                                           ("test", "a", "p01/y.png")]):
        img.write(root / split / cls / rel, seed=k)
    data = load_dataset(make_config({"type": "splits", "path": str(root)}, patient_ids="folder"))
    assert dict(zip(data.ids, data.groups)) == {
        "test/a/p01/y.png": "p01", "train/a/p01/x.png": "p01", "train/a/p02/x.png": "p02",
        "train/b/loose.png": "train/b/loose.png", "train/b/p03/s1/x.png": "p03"}
    assert audit_dataset(data, near=False).report["patient_overlap"]["patients"] == {"p01": ["test", "train"]}
    assert load_dataset(make_config({"type": "splits", "path": str(root)})).groups is None  # no DICOM: no ids


def test_layout_ids_win_and_header_studies_fill_the_gap(tmp_path: Path, make_config, img) -> None:
    for i in range(4):
        write_dicom(tmp_path / f"s{i}.dcm", i, PatientID="HEADER", StudyInstanceUID=f"1.2.{i // 2}")
    img.write(tmp_path / "plain.png", seed=9)
    (tmp_path / "m.csv").write_text("path,label,patient_id\ns0.dcm,x,c1\ns1.dcm,y,c1\ns2.dcm,x,c2\ns3.dcm,y,c3\n"
                                    "plain.png,x,c4\n")
    data = load_dataset(make_config({"type": "csv", "path": str(tmp_path / "m.csv")}))
    assert data.groups.tolist() == ["c4", "c1", "c1", "c2", "c3"]  # the manifest's column, not the header
    assert data.studies.tolist() == ["plain.png", "1.2.0", "1.2.0", "1.2.1", "1.2.1"]  # a PNG: its own study


def test_files_without_a_patient_id_are_their_own_group(tmp_path: Path, make_config, img) -> None:
    write_dicom(tmp_path / "t" / "a" / "1.dcm", 1, PatientID="P1")
    write_dicom(tmp_path / "t" / "a" / "2.dcm", 2)  # no PatientID
    img.write(tmp_path / "t" / "b" / "3.png", seed=3)
    write_dicom(tmp_path / "t" / "b" / "4.dcm", 4, PatientID="  ")  # blank
    data = load_dataset(make_config({"type": "folder", "path": str(tmp_path / "t")}))
    assert data.groups.tolist() == ["P1", "a/2.dcm", "b/3.png", "b/4.dcm"] and data.studies is None
    plain = tmp_path / "plain"
    write_dicom(plain / "a" / "1.dcm", 1)
    write_dicom(plain / "b" / "2.dcm", 2)
    assert load_dataset(make_config({"type": "folder", "path": str(plain)})).groups is None  # fingerprint as before


def test_one_patient_id_for_every_file_is_warned_about(tmp_path: Path, make_config) -> None:
    for i, cls in enumerate("aabb"):
        write_dicom(tmp_path / "t" / cls / f"{i}.dcm", i, PatientID="ANONYMOUS")
    with pytest.warns(RuntimeWarning, match=r"all 4 DICOM files carry the same PatientID 'ANONYMOUS'.*data\.patient_ids: folder or none"):
        load_dataset(make_config({"type": "folder", "path": str(tmp_path / "t")}))


def test_dicom_ids_of_a_damaged_file_are_empty(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    assert dicom_ids(bad) == ("", "")
    good = write_dicom(tmp_path / "good.dcm", 0, PatientID=" P9 ", StudyInstanceUID="1.2.3")
    assert dicom_ids(good) == ("P9", "1.2.3")
