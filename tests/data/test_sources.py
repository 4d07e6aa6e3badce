"""Tests for loading data (medclf.data.sources, medclf.data.layouts): each layout, the audit (fingerprint, duplicates),
and clear data errors."""

from __future__ import annotations

import shutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from medclf.data import (
    LAYOUTS,
    Preprocessing,
    cache,
    list_image_files,
    load_dataset,
    preprocessing_from_config,
)
from medclf.errors import DataError
from real_data import REAL_NPZ


# ------------------------------------------------------------------------------------------------- folder
def test_folder_layout_lists_classes_and_images_in_order(folder_tree: Path, make_config) -> None:
    data = load_dataset(make_config({"type": "folder", "path": str(folder_tree)}))
    assert data.class_names == ["cat", "dog"]
    assert list(data.ids) == ["cat/a.png", "cat/nested/b.png", "dog/c.png", "dog/d.PNG"]
    assert list(data.labels) == [0, 0, 1, 1] and data.labels.dtype == np.int64
    assert set(data.splits) == {"train"} and data.groups is None
    assert data.images.shape == (4, 1, 16, 16) and data.images.dtype == np.uint8
    assert data.root == str(folder_tree) and data.duplicates == []
    assert len(data.fingerprint) >= 16 and int(data.fingerprint, 16) >= 0


def test_hidden_and_non_image_entries_are_skipped(folder_tree: Path, make_config) -> None:
    ids = load_dataset(make_config({"type": "folder", "path": str(folder_tree)})).ids
    assert not any("ipynb" in i or ".hidden" in i or "ghost" in i or "notes" in i for i in ids)
    assert LAYOUTS.names() == ["csv", "folder", "folds", "npz", "patients", "splits", "synthetic"]


def test_second_load_decodes_nothing_and_is_identical(folder_tree: Path, make_config) -> None:
    cfg = make_config({"type": "folder", "path": str(folder_tree)})
    first = load_dataset(cfg)
    assert cache.STATS.n_decoded == 4
    second = load_dataset(cfg)
    assert cache.STATS.n_decoded == 4 and cache.STATS.n_hits == 1  # nothing decoded the second time
    np.testing.assert_array_equal(first.images, second.images)
    assert first.fingerprint == second.fingerprint
    assert any(p.suffix == ".npy" for p in cfg.cache_dir.iterdir())


def test_default_cache_folder_is_used_without_cache_dir(folder_tree: Path, make_config, _isolated_cache: Path) -> None:
    load_dataset(make_config({"type": "folder", "path": str(folder_tree)}, cache_dir=None))
    assert any(p.suffix == ".npy" for p in _isolated_cache.iterdir())


def test_fingerprint_follows_content_and_preprocessing(folder_tree: Path, make_config, img) -> None:
    source = {"type": "folder", "path": str(folder_tree)}
    base = load_dataset(make_config(source)).fingerprint
    assert load_dataset(make_config(source, channels=3)).fingerprint != base
    img.write(folder_tree / "dog" / "c.png", seed=77)
    changed = load_dataset(make_config(source))
    assert changed.fingerprint != base
    assert cache.STATS.n_decoded == 4 + 4 + 1  # the edit re-decodes one file, not four


def test_byte_identical_files_are_reported_as_duplicates(folder_tree: Path, make_config) -> None:
    shutil.copy(folder_tree / "cat" / "a.png", folder_tree / "dog" / "zz-copy.png")
    data = load_dataset(make_config({"type": "folder", "path": str(folder_tree)}))
    assert data.duplicates == [["cat/a.png", "dog/zz-copy.png"]]


def test_missing_root_names_the_path_and_the_key(tmp_path: Path, make_config) -> None:
    cfg = make_config({"type": "folder", "path": str(tmp_path / "nowhere")})
    with pytest.raises(DataError, match=r"nowhere: the folder given as data\.source\.path does not exist") as info:
        load_dataset(cfg)
    assert info.value.path == tmp_path / "nowhere"


def test_a_single_class_is_an_error(tmp_path: Path, make_config, img) -> None:
    img.write(tmp_path / "only" / "lungs" / "a.png")
    with pytest.raises(DataError, match=r"at least 2 classes, found 1 \(only 'lungs'\)"):
        load_dataset(make_config({"type": "folder", "path": str(tmp_path / "only")}))


def test_an_empty_class_folder_is_an_error(folder_tree: Path, make_config) -> None:
    (folder_tree / "bird" / ".ipynb_checkpoints").mkdir(parents=True)
    with pytest.raises(DataError, match=r"bird: class folder 'bird' holds no images"):
        load_dataset(make_config({"type": "folder", "path": str(folder_tree)}))


def test_split_folders_given_to_the_folder_layout_suggest_splits(tmp_path: Path, make_config, img) -> None:
    img.write(tmp_path / "d" / "train" / "a" / "x.png")
    img.write(tmp_path / "d" / "test" / "a" / "y.png")
    with pytest.raises(DataError, match=r"named like splits .* set data\.source\.type to 'splits'"):
        load_dataset(make_config({"type": "folder", "path": str(tmp_path / "d")}))


def test_a_corrupt_image_fails_the_load_naming_it(folder_tree: Path, make_config) -> None:
    (folder_tree / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"broken\.png: .*(corrupt|cannot be decoded)"):
        load_dataset(make_config({"type": "folder", "path": str(folder_tree)}))


# ------------------------------------------------------------------------------------------------- splits
@pytest.fixture
def split_tree(tmp_path: Path, img) -> Path:
    root = tmp_path / "splits"
    seed = 0
    for split, n in (("train", 2), ("valid", 1), ("test", 1)):
        for cls in ("benign", "malignant"):
            for i in range(n):
                seed += 1
                img.write(root / split / cls / f"{i}.png", seed=seed)
    return root


def test_splits_layout_uses_the_first_existing_folder_name(split_tree: Path, make_config) -> None:
    data = load_dataset(make_config({"type": "splits", "path": str(split_tree)}))
    assert data.class_names == ["benign", "malignant"]
    assert data.counts() == {
        "train": {"benign": 2, "malignant": 2},
        "val": {"benign": 1, "malignant": 1},
        "test": {"benign": 1, "malignant": 1},
    }
    assert "valid/malignant/0.png" in set(data.ids)
    assert data.splits[list(data.ids).index("valid/malignant/0.png")] == "val"


def test_val_and_test_are_optional_train_is_not(split_tree: Path, make_config) -> None:
    shutil.rmtree(split_tree / "valid")
    shutil.rmtree(split_tree / "test")
    assert set(load_dataset(make_config({"type": "splits", "path": str(split_tree)})).splits) == {"train"}
    with pytest.raises(DataError, match=r"no training split folder: looked for \['training'\]"):
        load_dataset(make_config({"type": "splits", "path": str(split_tree), "train": ["training"]}))


def test_a_class_only_in_test_is_an_error(split_tree: Path, make_config, img) -> None:
    img.write(split_tree / "test" / "cyst" / "0.png")
    with pytest.raises(DataError, match=r"class 'cyst' appears in the test split but not in train"):
        load_dataset(make_config({"type": "splits", "path": str(split_tree)}))


# ---------------------------------------------------------------------------------------------------- csv
def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_layout_with_splits_and_numeric_labels(tmp_path: Path, make_config, img) -> None:
    for name in ("a", "b", "c", "d"):
        img.write(tmp_path / "imgs" / f"{name}.png", seed=ord(name))
    manifest = write_csv(
        tmp_path / "labels.csv",
        "path,label,split\nimgs/d.png,10,test\nimgs/a.png,2,train\nimgs\\b.png, 10 ,valid\n./imgs/c.png,2,train\n",
    )
    data = load_dataset(make_config({"type": "csv", "path": str(manifest)}))
    assert data.class_names == ["2", "10"]  # integer labels in numeric order
    assert list(data.ids) == ["imgs/a.png", "imgs/b.png", "imgs/c.png", "imgs/d.png"]
    assert list(data.labels) == [0, 1, 0, 1]
    assert list(data.splits) == ["train", "val", "train", "test"]
    assert data.root == str(tmp_path)


def test_csv_custom_columns_and_no_split_column(tmp_path: Path, make_config, img) -> None:
    img.write(tmp_path / "x.png", seed=1)
    img.write(tmp_path / "y.png", seed=2)
    manifest = write_csv(tmp_path / "m.csv", "file,diagnosis\nx.png,normal\ny.png,tumour\n")
    data = load_dataset(make_config({"type": "csv", "path": str(manifest), "path_column": "file",
                                     "label_column": "diagnosis"}))
    assert data.class_names == ["normal", "tumour"] and set(data.splits) == {"train"}


@pytest.mark.parametrize(
    "rows, message",
    [
        ("a.png,x\nmissing.png,y\n", r"m\.csv: line 3: image file 'missing\.png' does not exist"),
        ("a.png,\nb.png,y\n", r"m\.csv: line 2: empty label in column 'label'"),
        ("a.png,x\na.png,y\n", r"line 3: 'a\.png' is listed again \(first on line 2\)"),
        ("a.png,x\nb.png,x\n", r"at least 2 classes, found 1"),
    ],
)
def test_csv_row_errors_name_the_line_and_value(tmp_path: Path, make_config, img, rows, message) -> None:
    img.write(tmp_path / "a.png", seed=1)
    img.write(tmp_path / "b.png", seed=2)
    manifest = write_csv(tmp_path / "m.csv", "path,label\n" + rows)
    with pytest.raises(DataError, match=message):
        load_dataset(make_config({"type": "csv", "path": str(manifest)}))


def test_csv_without_the_label_column_lists_the_columns(tmp_path: Path, make_config) -> None:
    manifest = write_csv(tmp_path / "m.csv", "path,class\na.png,x\n")
    message = r"no column 'label' \(data\.source\.label_column\); its columns are \['path', 'class'\]"
    with pytest.raises(DataError, match=message):
        load_dataset(make_config({"type": "csv", "path": str(manifest)}))


# ---------------------------------------------------------------------------------------------------- npz
def medmnist_arrays(rgb: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (28, 28, 3) if rgb else (28, 28)
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3).reshape(n, 1).astype(np.uint8)
    arrays["train_images"][4] = arrays["train_images"][1]  # an exact duplicate, as in real MedMNIST
    return arrays


def test_npz_layout_reads_medmnist_arrays(tmp_path: Path, make_config) -> None:
    np.savez(tmp_path / "m.npz", **medmnist_arrays())
    data = load_dataset(make_config({"type": "npz", "path": str(tmp_path / "m.npz")}))
    assert data.images.shape == (11, 1, 16, 16)
    assert data.class_names == ["0", "1", "2"]
    assert list(data.ids[:2]) == ["train/0", "train/1"] and data.ids[6] == "val/0" and data.ids[-1] == "test/2"
    assert data.counts()["test"] == {"0": 1, "1": 1, "2": 1}
    assert data.duplicates == [["train/1", "train/4"]]
    assert data.root is None and len(data.fingerprint) >= 16
    assert cache.STATS.n_decoded == 0


def test_npz_rgb_to_gray_and_class_names(tmp_path: Path, make_config) -> None:
    np.savez(tmp_path / "m.npz", **medmnist_arrays(rgb=True))
    names = ["adipose", "background", "debris"]
    data = load_dataset(make_config({"type": "npz", "path": str(tmp_path / "m.npz"), "class_names": names},
                                    image_size=28))
    assert data.images.shape == (11, 1, 28, 28) and data.class_names == names
    rgb = medmnist_arrays(rgb=True)["train_images"][0].astype(np.uint32)
    luminance = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    np.testing.assert_array_equal(data.images[0, 0], luminance)


def test_npz_errors(tmp_path: Path, make_config) -> None:
    arrays = medmnist_arrays()
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(DataError, match=r"labels go up to 2 but data\.source\.class_names lists 2 names"):
        load_dataset(make_config({"type": "npz", "path": str(tmp_path / "m.npz"), "class_names": ["a", "b"]}))
    del arrays["val_labels"]
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(DataError, match=r"only one of val_images and val_labels"):
        load_dataset(make_config({"type": "npz", "path": str(tmp_path / "broken.npz")}))
    with pytest.raises(DataError, match=r"nope\.npz: the file given as data\.source\.path does not exist"):
        load_dataset(make_config({"type": "npz", "path": str(tmp_path / "nope.npz")}))


@pytest.mark.skipif(not REAL_NPZ.exists(), reason="../shared/data/pneumoniamnist.npz is not on this machine")
def test_real_pneumoniamnist_has_its_official_splits_and_duplicates(make_config) -> None:
    data = load_dataset(make_config({"type": "npz", "path": str(REAL_NPZ), "class_names": ["normal", "pneumonia"]},
                                    image_size=28))
    assert data.counts()["train"] == {"normal": 1214, "pneumonia": 3494}
    assert len(data) == 4708 + 524 + 624 and data.duplicates


# ---------------------------------------------------------------------------------------------- synthetic
@dataclass
class FakePhantoms:
    images: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray
    class_names: list[str]


def fake_make_phantoms(*, n_patients: int, slices_per_patient: int, image_size: int, seed: int) -> FakePhantoms:
    n = n_patients * slices_per_patient
    rng = np.random.default_rng(seed)
    return FakePhantoms(
        images=rng.integers(0, 256, (n, 1, image_size, image_size), dtype=np.uint8),
        labels=np.arange(n, dtype=np.int64) % 2,
        patient_ids=np.repeat([f"p{i:03d}" for i in range(n_patients)], slices_per_patient),
        class_names=["healthy", "lesion"],
    )


def test_synthetic_layout_groups_by_patient(make_config, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("medclf.data.synthetic")
    module.make_phantoms = fake_make_phantoms
    monkeypatch.setitem(sys.modules, "medclf.data.synthetic", module)
    data = load_dataset(make_config({"type": "synthetic", "n_patients": 4, "slices_per_patient": 2,
                                     "image_size": 32}, channels=3))
    assert data.images.shape == (8, 3, 16, 16)
    assert list(data.groups) == ["p000", "p000", "p001", "p001", "p002", "p002", "p003", "p003"]
    assert data.class_names == ["healthy", "lesion"] and set(data.splits) == {"train"}
    assert data.ids[5] == "train/5"


def test_synthetic_layout_with_the_real_generator(make_config) -> None:
    pytest.importorskip("medclf.data.synthetic")
    cfg = make_config({"type": "synthetic", "n_patients": 4, "slices_per_patient": 2, "image_size": 32})
    data = load_dataset(cfg)
    assert data.images.shape == (8, 1, 16, 16) and len(set(data.groups)) == 4
    assert load_dataset(cfg).fingerprint == data.fingerprint  # deterministic generator, same fingerprint


# --------------------------------------------------------------------------------------------- prediction
def test_list_image_files_from_files_folders_and_csvs(folder_tree: Path, tmp_path: Path) -> None:
    single = folder_tree / "dog" / "c.png"
    write_csv(tmp_path / "with_path.csv", "id,path\n1,folder/cat/a.png\n2,folder/dog/c.png\n")
    write_csv(tmp_path / "first_col.csv", "file\nfolder/dog/d.PNG\n")
    found = list_image_files([single, folder_tree / "cat", tmp_path / "with_path.csv", str(tmp_path / "first_col.csv")])
    assert found == [
        single,
        folder_tree / "cat" / "a.png",
        folder_tree / "cat" / "nested" / "b.png",
        folder_tree / "cat" / "a.png",
        folder_tree / "dog" / "c.png",
        folder_tree / "dog" / "d.PNG",
    ]


def test_list_image_files_errors(folder_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothing\.png: the input does not exist"):
        list_image_files([tmp_path / "nothing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: holds no images"):
        list_image_files([tmp_path / "empty"])
    with pytest.raises(DataError, match=r"notes\.txt: is not an image"):
        list_image_files([folder_tree / "cat" / "notes.txt"])


def test_preprocessing_from_config(make_config, tmp_path: Path) -> None:
    cfg = make_config({"type": "folder", "path": str(tmp_path)}, image_size=[24, 32], channels=3, resize="pad")
    assert preprocessing_from_config(cfg) == Preprocessing(size_hw=(24, 32), channels=3, resize="pad")


def test_npz_object_array_is_refused_by_name_without_unpickling(tmp_path: Path, make_config) -> None:
    class Payload:  # unpickling it would create the marker
        def __reduce__(self):
            return (open, (str(tmp_path / "marker"), "w"))

    arrays = medmnist_arrays()
    arrays["train_labels"] = np.array([Payload()] * 6, dtype=object)
    np.savez(tmp_path / "hostile.npz", **arrays)
    with pytest.raises(DataError, match=r"hostile\.npz: array 'train_labels' holds Python objects, and medclf never "
                                        r"unpickles data"):
        load_dataset(make_config({"type": "npz", "path": str(tmp_path / "hostile.npz")}))
    assert not (tmp_path / "marker").exists()


def test_a_class_left_empty_by_skipping_names_the_skipped_files(tmp_path: Path, make_config, img) -> None:
    for i in range(2):
        img.write(tmp_path / "d" / "a" / f"{i}.png", seed=i)
    (tmp_path / "d" / "b").mkdir()
    for i in range(5):
        (tmp_path / "d" / "b" / f"bad{i}.png").write_bytes(b"")
    message = (r"after skipping 5 unreadable files \(b/bad0\.png, b/bad1\.png, b/bad2\.png and 2 more; "
               r"data\.on_bad_image: skip\), class 'b' has no training images left")
    with pytest.raises(DataError, match=message):
        load_dataset(make_config({"type": "folder", "path": str(tmp_path / "d")}, on_bad_image="skip"))


# ------------------------------------------------------------------------------------------------- memory
def test_data_memory_chooses_the_map_and_auto_compares_the_set_with_ram(
    folder_tree: Path, make_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medclf.data import sources

    source = {"type": "folder", "path": str(folder_tree)}
    assert sources.physical_memory() > 2**20  # os.sysconf on this machine
    monkeypatch.setattr(sources, "physical_memory", lambda: 10_000)
    # 4 images of 16x16 = 1,024 bytes: mapped above a share of 0.1 of 10,000 bytes, in RAM at 0.5
    assert sources.maps_from_disk(make_config(source, memory="auto", memory_share=0.1), 4)
    assert not sources.maps_from_disk(make_config(source, memory="auto"), 4)
    assert sources.maps_from_disk(make_config(source, memory="mmap"), 4)
    assert not sources.maps_from_disk(make_config(source, memory="ram", memory_share=0.01), 4)
    ram = load_dataset(make_config(source, memory="ram"))
    mapped = load_dataset(make_config(source, memory="auto", memory_share=0.1))
    assert isinstance(mapped.images, np.memmap) and not isinstance(ram.images, np.memmap)
    np.testing.assert_array_equal(mapped.images, ram.images)
    assert mapped.fingerprint == ram.fingerprint
