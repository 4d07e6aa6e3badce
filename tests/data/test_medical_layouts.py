"""The medical layouts (folds, patient trees, CSV with patients/folds/multi-label) and formats (DICOM, NIfTI,
16-bit), built on tiny generated data; bad-input policy."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from dicom_files import write_dicom
from medclf.config import CVConfig
from medclf.data import load_dataset
from medclf.data.dataset import Preprocessing
from medclf.data.decode import decode_image
from medclf.data.splitting import make_folds
from medclf.errors import DataError

RAMP = np.tile(np.arange(16, dtype=np.uint16) * 100, (16, 1))  # 0 .. 1500, left to right
PREP = Preprocessing((16, 16), 1)
SPLIT_SEED = {"train": 1, "valid": 2, "test": 3}


# ------------------------------------------------------------------------------------------------- formats
def test_dicom_rescale_window_and_monochrome1(tmp_path: Path) -> None:
    plain = decode_image(write_dicom(tmp_path / "a.dcm", RAMP), PREP)[0]
    assert plain[0, 0] == 0 and plain[0, -1] == 255  # min-max without a window
    # rescale (HU = 2 * stored - 1000) then the file's window [0, 1000] HU: stored 500..1000 -> 0..255
    windowed = decode_image(write_dicom(tmp_path / "b.dcm", RAMP, RescaleSlope=2, RescaleIntercept=-1000,
                                        WindowCenter=500, WindowWidth=1000), PREP)[0]
    assert windowed[0, 5] == 0 and windowed[0, 10] == 255 and 0 < windowed[0, 7] < 255
    inverted = decode_image(write_dicom(tmp_path / "c.dcm", RAMP, PhotometricInterpretation="MONOCHROME1"), PREP)[0]
    assert inverted[0, 0] == 255 and inverted[0, -1] == 0
    ignored = decode_image(tmp_path / "b.dcm", Preprocessing((16, 16), 1, dicom_voi=False))[0]
    assert ignored[0, 0] == 0 and ignored[0, -1] == 255


def _voi_lut_item(first_mapped: int, entries: np.ndarray) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.LUTDescriptor = [len(entries), first_mapped, 16]
    item.LUTData = entries.astype(np.uint16).tobytes()
    return item


def test_dicom_voi_lut_reads_modality_values_and_wins_over_the_window(tmp_path: Path) -> None:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    from pydicom.sequence import Sequence

    # stored 0..1500 + intercept 1000 = modality 1000..2500, exactly the LUT's domain (first mapped 1000): a
    # LUT read on stored values would see 0..1500 and map most of the ramp to its first entry
    lut = _voi_lut_item(1000, np.arange(1501) * 40)
    path = write_dicom(tmp_path / "lut.dcm", RAMP, RescaleSlope=1, RescaleIntercept=1000,
                       VOILUTSequence=Sequence([lut]), WindowCenter=2400, WindowWidth=10)
    out = decode_image(path, PREP)[0]
    ds = pydicom.dcmread(path)
    reference = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds).astype(np.int64), ds).astype(float)
    assert np.array_equal(out[0], np.rint(reference[0] / 60000 * 255).astype(np.uint8))
    assert out[0].tolist() == list(range(0, 256, 17))  # the LUT, not the narrow window at 2400
    # without the LUT the file's window (center 1250, width 500: modality 1000..1500) applies
    windowed = decode_image(write_dicom(tmp_path / "win.dcm", RAMP, RescaleSlope=1, RescaleIntercept=1000,
                                        WindowCenter=1250, WindowWidth=500), PREP)[0]
    assert windowed[0, 0] == 0 and windowed[0, 5] == 255 and 0 < windowed[0, 2] < 255
    # an explicit config window wins over the file's LUT and window: [1750, 1500] spans modality 1000..2500
    explicit = decode_image(path, Preprocessing((16, 16), 1, normalization="window", window=(1750, 1500)))[0]
    assert explicit[0].tolist() == list(range(0, 256, 17))
    narrow = decode_image(path, Preprocessing((16, 16), 1, normalization="window", window=(1250, 500)))[0]
    assert narrow[0, 0] == 0 and narrow[0, 5] == 255


def test_unreadable_dicom_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom file at all" * 10)
    with pytest.raises(DataError, match=r"bad\.dcm: .*DICOM"):
        decode_image(bad, PREP)


def test_nifti_axis_and_slice(tmp_path: Path) -> None:
    volume = np.zeros((16, 16, 5), dtype=np.float32)
    for z in range(5):
        volume[..., z] = z * 10 + np.arange(16)[:, None]  # slice z: a ramp along the first axis
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    middle = decode_image(path, PREP)[0]
    assert middle.std() > 0 and middle.min() == 0 and middle.max() == 255
    first = decode_image(path, Preprocessing((16, 16), 1, volume_axis=0, volume_slice=0))[0]
    assert first.std() > 0  # a slice across the first axis shows the z ramp
    with pytest.raises(DataError, match="outside the volume"):
        decode_image(path, Preprocessing((16, 16), 1, volume_slice=9))


def test_16bit_png_percentile_and_window(tmp_path: Path) -> None:
    arr = RAMP.copy()
    arr[0, 0] = 65000  # one hot pixel
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    minmax = decode_image(path, PREP)[0]
    clipped = decode_image(path, Preprocessing((16, 16), 1, normalization="percentile", percentiles=(0, 99)))[0]
    assert minmax[1, -1] < 10 and clipped[1, -1] == 255  # the hot pixel no longer squashes the rest
    window = decode_image(path, Preprocessing((16, 16), 1, normalization="window", window=(500, 200)))[0]
    assert window[1, 3] == 0 and window[1, 7] == 255
    assert Preprocessing((16, 16), 1, normalization="window", window=(500, 200)).key() != PREP.key()


# ------------------------------------------------------------------------------------------------- layouts
def test_folds_layout_uses_exactly_those_folds(tmp_path: Path, make_config, img) -> None:
    root = tmp_path / "folds"
    for k in range(2):
        for split in ("train", "valid", "test"):
            for c, cls in enumerate(("benign", "malignant")):
                for i in range(2):
                    img.write(root / f"Fold{k}" / split / cls / f"{k}{split}{i}.png", seed=k * 100 + c * 10 + i)
    (root / ".DS_Store").write_bytes(b"x")
    data = load_dataset(make_config({"type": "folds", "path": str(root)}))
    assert data.class_names == ["benign", "malignant"] and set(data.fold_ids) == {0, 1}
    folds = make_folds(data, CVConfig(n_folds=5), seed=0)
    assert len(folds) == 2
    assert all(data.ids[i].startswith("Fold1/train/") for i in folds[1].train)
    assert all(data.ids[i].startswith("Fold0/test/") for i in folds[0].holdout) and len(folds[0].test) == 0


def test_patient_tree_layout_groups_patients_and_studies(tmp_path: Path, make_config, img) -> None:
    root = tmp_path / "mura"
    for split in ("train", "valid"):
        for p in range(4):
            for s, label in enumerate(("negative", "positive")):
                for i in range(2):
                    img.write(root / split / "XR_WRIST" / f"patient{split}{p}" / f"study{s + 1}_{label}" /
                              f"image{i}.png", seed=1000 * (split == "train") + 100 * p + 10 * s + i)
    data = load_dataset(make_config({"type": "patients", "path": str(root)}))
    assert data.class_names == ["negative", "positive"] and len(data) == 32
    assert data.groups[0] == "patienttrain0" and data.studies[0] == "XR_WRIST/patienttrain0/study1_negative"
    assert set(data.splits) == {"train", "val"}
    folds = make_folds(data, CVConfig(n_folds=2, val_fraction=0.5), seed=0)
    for fold in folds:  # grouped: no patient on both sides
        assert not set(data.groups[fold.train]) & set(data.groups[fold.holdout])


def test_csv_manifest_with_patients_folds_and_multilabel(tmp_path: Path, make_config, img) -> None:
    lines = ["path,labels,patient_id,fold"]
    for i in range(8):
        img.write(tmp_path / f"i{i}.png", seed=i)
        lines.append(f"i{i}.png,{['effusion', 'effusion|nodule', 'nodule', ''][i % 4]},p{i // 2},{i % 2}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    data = load_dataset(make_config({"type": "csv", "path": str(tmp_path / "m.csv"), "label_column": "labels",
                                     "multilabel": True}))
    assert data.multilabel and data.class_names == ["effusion", "nodule"]
    assert data.labels.tolist()[:4] == [[1, 0], [1, 1], [0, 1], [0, 0]]
    assert data.groups.tolist()[:2] == ["p0", "p0"]
    folds = make_folds(data, CVConfig(val_fraction=0.5), seed=0)
    assert [sorted(data.ids[f.holdout]) for f in folds] == [["i0.png", "i2.png", "i4.png", "i6.png"],
                                                            ["i1.png", "i3.png", "i5.png", "i7.png"]]


def test_csv_label_columns_and_iterative_stratification(tmp_path: Path, make_config, img) -> None:
    lines = ["path,a,b,c"]
    rng = np.random.default_rng(0)
    for i in range(30):
        img.write(tmp_path / f"i{i}.png", seed=i)
        lines.append(f"i{i}.png," + ",".join(str(v) for v in rng.integers(0, 2, 3)))
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    data = load_dataset(make_config({"type": "csv", "path": str(tmp_path / "m.csv"), "label_columns": ["a", "b", "c"]}))
    assert data.labels.shape == (30, 3)
    folds = make_folds(data, CVConfig(n_folds=3), seed=0)
    held = np.concatenate([f.holdout for f in folds])
    assert sorted(held) == list(range(30))  # every image held out exactly once
    per_fold = np.array([data.labels[f.holdout].sum(axis=0) for f in folds])
    assert (per_fold.max(axis=0) - per_fold.min(axis=0) <= 2).all()  # labels spread evenly


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("path,a\nx.png,2\n", "column 'a' holds '2'; label columns must hold 0 or 1"),
        ("path,label,split\nx.png,cat,train\ny.png,dog,test\n", "label 'dog' .* appears in the test split"),
    ],
)
def test_csv_bad_labels_get_clear_messages(tmp_path: Path, make_config, img, body: str, message: str) -> None:
    img.write(tmp_path / "x.png", seed=1)
    img.write(tmp_path / "y.png", seed=2)
    (tmp_path / "m.csv").write_text(body)
    extra = {"label_columns": ["a"]} if "path,a" in body else {}
    with pytest.raises(DataError, match=message):
        load_dataset(make_config({"type": "csv", "path": str(tmp_path / "m.csv"), **extra}))


@pytest.mark.parametrize(
    ("body", "extra", "message"),
    [
        ("path,labels,split\nx.png,a,train\ny.png,a|b,val\nz.png,zebra|a,test\n", {"multilabel": True},
         r"m\.csv: multi-label label 'zebra' \(1 in test\) in column 'labels' has no positive image in train or val"),
        ("path,a,b,c,split\nx.png,1,0,0,train\ny.png,1,0,0,val\nz.png,0,1,0,test\n",
         {"label_columns": ["a", "b", "c"]},
         r"multi-label labels 'b' \(1 in test\), 'c' \(0 in test\) \(data\.source\.label_columns\) have no positive"),
    ],
)
def test_multilabel_csv_label_only_in_test_is_refused(tmp_path: Path, make_config, img, body, extra, message) -> None:
    for k, name in enumerate("xyz"):
        img.write(tmp_path / f"{name}.png", seed=k)
    (tmp_path / "m.csv").write_text(body)
    source = {"type": "csv", "path": str(tmp_path / "m.csv"), "label_column": "labels", **extra}
    with pytest.raises(DataError, match=message):
        load_dataset(make_config(source))


def test_multilabel_npz_label_only_in_test_is_refused(tmp_path: Path, make_config) -> None:
    path = tmp_path / "chest.npz"
    train = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 1]])
    np.savez(path, train_images=np.zeros((3, 16, 16), np.uint8), train_labels=train,
             test_images=np.zeros((2, 16, 16), np.uint8), test_labels=np.array([[0, 1, 0], [0, 1, 1]]))
    with pytest.raises(DataError, match=r"chest\.npz: multi-label label 'mass' \(2 in test\) .*no positive image"):
        load_dataset(make_config({"type": "npz", "path": str(path), "class_names": ["effusion", "mass", "nodule"]}))


def test_multilabel_label_left_only_in_test_after_skipping_is_refused(tmp_path: Path, make_config, img) -> None:
    for k, name in enumerate("xyz"):
        img.write(tmp_path / f"{name}.png", seed=k)
    (tmp_path / "bad.png").write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,labels,split\nx.png,a,train\nbad.png,b,train\ny.png,a,val\nz.png,b,test\n")
    cfg = make_config({"type": "csv", "path": str(tmp_path / "m.csv"), "label_column": "labels", "multilabel": True},
                      on_bad_image="skip")
    with pytest.raises(DataError, match=r"after skipping 1 unreadable files .*: multi-label label 'b' \(1 in test\)"):
        load_dataset(cfg)


# ------------------------------------------------------------------------------------------------- bad input
def _tree_with_bad_files(root: Path, img) -> None:
    for cls in ("a", "b"):
        for i in range(3):
            img.write(root / cls / f"{i}.png", seed=ord(cls) + i)
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "b" / "text.jpg").write_text("not an image")
    good = (root / "a" / "0.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "a" / "broken.dcm").write_bytes(b"garbage")
    (root / "a" / "Thumbs.db").write_bytes(b"x")


def test_on_bad_image_fail_names_every_file(tmp_path: Path, make_config, img) -> None:
    _tree_with_bad_files(tmp_path / "d", img)
    with pytest.raises(DataError, match=r"4 image files cannot be decoded: .*empty\.png.*0 bytes"):
        load_dataset(make_config({"type": "folder", "path": str(tmp_path / "d")}))


def test_on_bad_image_skip_lists_the_skipped(tmp_path: Path, make_config, img) -> None:
    _tree_with_bad_files(tmp_path / "d", img)
    cfg = make_config({"type": "folder", "path": str(tmp_path / "d")}, on_bad_image="skip")
    data = load_dataset(cfg)
    assert len(data) == 6 and sorted(Path(p).name for p, _ in data.skipped) == [
        "broken.dcm", "empty.png", "text.jpg", "truncated.png"]
    assert all(reason for _, reason in data.skipped)
    again = load_dataset(cfg)  # cached: the good rows come back, the bad files are listed again
    assert np.array_equal(again.images, data.images) and len(again.skipped) == 4


def test_dicom_and_nifti_files_load_through_the_cache_normalised_first(tmp_path: Path, make_config) -> None:
    from medclf.data import cache

    root = tmp_path / "scans"
    for i in range(2):
        write_dicom(root / "ct" / f"s{i}.dcm", RAMP + i, RescaleSlope=1, RescaleIntercept=-1024)
        volume = np.stack([RAMP.astype(np.float32) * (i + 1)] * 3, axis=-1)
        (root / "mr").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(root / "mr" / f"v{i}.nii.gz"))
    source = {"type": "folder", "path": str(root)}
    data = load_dataset(make_config(source))
    assert data.ids.tolist() == ["ct/s0.dcm", "ct/s1.dcm", "mr/v0.nii.gz", "mr/v1.nii.gz"]
    assert cache.STATS.n_decoded == 4
    again = load_dataset(make_config(source))
    assert cache.STATS.n_decoded == 4 and np.array_equal(again.images, data.images)  # a cache hit
    windowed = load_dataset(make_config(source, intensity={"normalization": "window", "window": [-774, 200]},
                                        ))
    assert cache.STATS.n_decoded == 8  # other normalisation: another cache entry, decoded again
    assert not np.array_equal(windowed.images[0], data.images[0])


def test_extension_less_dicom_files_are_found_by_their_marker(tmp_path: Path, make_config, img) -> None:
    root = tmp_path / "scans"
    for i in range(2):
        write_dicom(root / "ct" / f"IM000{i}", RAMP + 10 * i)
        img.write(root / "xr" / f"{i}.png", seed=i)
    write_dicom(tmp_path / "DICOMDIR", RAMP).replace(root / "ct" / "DICOMDIR")  # an index, never an image
    (root / "ct" / "README").write_text("exported by the scanner")  # no extension, no DICM marker
    data = load_dataset(make_config({"type": "folder", "path": str(root)}))
    assert data.ids.tolist() == ["ct/IM0000", "ct/IM0001", "xr/0.png", "xr/1.png"]
    assert data.images[0, 0, 0, 0] == 0 and data.images[0, 0, 0, -1] == 255  # decoded as DICOM (min-max)
    (root / "m.csv").write_text("path,label\nct/IM0001,ct\nxr/0.png,xr\n")
    listed = load_dataset(make_config({"type": "csv", "path": str(root / "m.csv")}))
    assert listed.ids.tolist() == ["ct/IM0001", "xr/0.png"]


def test_audit_of_predefined_folds_compares_within_each_fold_only(tmp_path: Path, make_config, img) -> None:
    from medclf.data.audit import audit_dataset

    root = tmp_path / "folds"
    for k in range(2):
        for split in ("train", "valid", "test"):
            for c, cls in enumerate(("a", "b")):
                img.write(root / f"Fold{k}" / split / cls / f"{split}.png", seed=100 * c + SPLIT_SEED[split])
    # the same image in every fold's folders is expected; Fold1 also leaks its train image into its test
    img.write(root / "Fold1" / "test" / "a" / "leak.png", seed=SPLIT_SEED["train"])
    data = load_dataset(make_config({"type": "folds", "path": str(root)}))
    folds = make_folds(data, CVConfig(), seed=0)
    report = audit_dataset(data, folds, near=False).report
    assert report["exact_duplicates"]["count"] == 1 and report["exact_duplicates"]["across"] == 1
    assert report["exact_duplicates"]["groups"] == [["Fold1/test/a/leak.png", "Fold1/train/a/train.png"]]
    assert [f["exact"] for f in report["folds"]] == [0, 1]


def test_npz_with_multilabel_targets(tmp_path: Path, make_config) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "chest.npz"
    np.savez(path, train_images=rng.integers(0, 256, (6, 16, 16), dtype=np.uint8),
             train_labels=rng.integers(0, 2, (6, 3)), test_images=rng.integers(0, 256, (2, 16, 16), dtype=np.uint8),
             test_labels=rng.integers(0, 2, (2, 3)))
    data = load_dataset(make_config({"type": "npz", "path": str(path), "class_names": ["a", "b", "c"]}))
    assert data.multilabel and data.labels.shape == (8, 3) and data.class_names == ["a", "b", "c"]
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((2, 16, 16), np.uint8), train_labels=np.full((2, 3), 2))
    with pytest.raises(DataError, match=r"\(N, L\) 0/1 multi-label"):
        load_dataset(make_config({"type": "npz", "path": str(bad)}))
