"""The config boundary's checks of what the disk and the machine can tell before training: the data path, the
layout on disk against data.source.type, keys against keys and the layout, and training.device."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from medclf.config import dump_config
from medclf.data.inspect import guess_source
from medclf.data.layouts.detect import detect_layout
from medclf.errors import ConfigError, ConfigWarning
from medclf.experiments import validation
from medclf.experiments.sweep_config import load_sweep
from medclf.experiments.validation import check_config, parse_checked_config


def touch(path: Path) -> None:
    """An image file as the checks see one: only listings are read, never pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def fold_tree(root: Path, n_folds: int = 3) -> Path:
    for k in range(n_folds):
        for split in ("train", "valid", "test"):
            for cls in ("glaucoma", "normal"):
                touch(root / f"Fold{k}" / split / cls / f"{k}.png")
    return root


def class_tree(root: Path, classes=("normal", "pneumonia")) -> Path:
    for cls in classes:
        touch(root / cls / "a.png")
    return root


def split_tree(root: Path, splits=("train", "test")) -> Path:
    for split in splits:
        class_tree(root / split)
    return root


def mura_tree(root: Path) -> Path:
    for split in ("train", "valid"):
        for patient in ("patient1", "patient2"):
            touch(root / split / "XR_ELBOW" / patient / "study1_positive" / "image1.png")
            touch(root / split / "XR_HAND" / patient / "study2_negative" / "image1.png")
    return root


def checked(source: dict, **sections) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)  # a check that passes warns about nothing either
        parse_checked_config({"data": {"source": source}, **sections})


# ------------------------------------------------------------------------------------------ data on disk
@pytest.mark.parametrize(("source", "accepted"), [
    ({"type": "folder"}, r"data\.source\.type 'folder' reads a folder with one sub-folder of images per class"),
    ({"type": "npz"}, r"data\.source\.type 'npz' reads a MedMNIST-style \.npz file"),
    ({"type": "folds"}, r"data\.source\.type 'folds' reads a folder of fold folders \(root/Fold0 \.\. FoldN"),
])
def test_a_missing_path_names_the_key_the_path_and_what_the_type_reads(tmp_path: Path, source: dict, accepted: str):
    gone = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=rf"data\.source\.path: '{gone}' does not exist; {accepted}"):
        checked(source | {"path": str(gone)})


def test_a_file_where_a_folder_is_read_and_the_other_way_round(tmp_path: Path):
    (tmp_path / "labels.csv").write_text("path,label\n")
    with pytest.raises(ConfigError, match=r"data\.source\.path: '.*labels\.csv' is a file, but data\.source\.type "
                                          r"'folder' reads a folder .*; it looks like a 'csv' layout \(a \.csv file\): "
                                          r"write data\.source\.type: csv\."):
        checked({"type": "folder", "path": str(tmp_path / "labels.csv")})
    fold_tree(tmp_path / "fundus")
    with pytest.raises(ConfigError, match=r"'.*fundus' is a folder, but data\.source\.type 'npz' reads a MedMNIST-style "
                                          r"\.npz file; it looks like a 'folds' layout"):
        checked({"type": "npz", "path": str(tmp_path / "fundus")})


@pytest.mark.parametrize(("name", "kind", "match"), [
    ("data.csv", "npz", r"'.*data\.csv' is a \.csv file, but data\.source\.type 'npz' reads a MedMNIST-style \.npz "
                        r"file; it looks like a 'csv' layout \(a \.csv file\): write data\.source\.type: csv"),
    ("data.txt", "csv", r"'.*data\.txt' is a \.txt file, but data\.source\.type 'csv' reads a \.csv manifest"),
    ("data.npz", "csv", r"'.*data\.npz' is a \.npz file, but .* write data\.source\.type: npz"),
])
def test_a_file_type_on_a_file_of_another_extension(tmp_path: Path, name: str, kind: str, match: str):
    (tmp_path / name).write_text("x")
    with pytest.raises(ConfigError, match=match):
        checked({"type": kind, "path": str(tmp_path / name)})


@pytest.mark.parametrize(("make", "kind", "fits", "seen"), [
    (fold_tree, "folder", "folds", r"Fold0\.\.Fold2, each with train/valid/test"),
    (fold_tree, "splits", "folds", r"Fold0\.\.Fold2, each with train/valid/test"),
    (split_tree, "folder", "splits", r"split folders test/train, each with class folders"),
    (mura_tree, "folder", "patients", r"split folders train/valid, then <body part>/<patient>/<study>_<positive\|negative>"),
    (mura_tree, "splits", "patients", r"split folders train/valid, then"),
    (class_tree, "splits", "folder", r"class folders normal, pneumonia holding images"),
    (class_tree, "folds", "folder", r"class folders normal, pneumonia holding images"),
    (class_tree, "patients", "folder", r"class folders normal, pneumonia"),
    (split_tree, "patients", "splits", r"split folders test/train"),
])
def test_a_layout_on_disk_that_is_not_the_type_says_which_type_fits(tmp_path: Path, make, kind, fits, seen):
    root = make(tmp_path / "data")
    with pytest.raises(ConfigError, match=rf"data\.source\.type: '{kind}' reads .*, but '{root}' looks like a "
                                          rf"'{fits}' layout \({seen}[^)]*\): write data\.source\.type: {fits}\.$"):
        checked({"type": kind, "path": str(root)})
    assert guess_source(root)["type"] == fits  # a bare-path inspect reads the same layout


def test_folds_without_fold_folders_lists_what_is_there(tmp_path: Path):
    root = tmp_path / "odd"
    touch(root / "images" / "scans" / "a.png")  # images one folder down: no layout is unmistakable here
    touch(root / "labels" / "x" / "b.png")
    with pytest.raises(ConfigError, match=r"data\.source\.path: '.*odd' has no Fold<k> folders \(folders there: "
                                          r"images, labels\); data\.source\.type 'folds' reads"):
        checked({"type": "folds", "path": str(root)})


@pytest.mark.parametrize("classes", [
    ("normal", "pneumonia"),
    ("benign", "malignant", "normal"),
    ("training", "testing"),  # ordinary words close to split names are still class names
    ("folded", "unfolded", "fold"),  # and so are words close to fold names
])
def test_no_false_alarm_on_class_per_folder_sets(tmp_path: Path, classes):
    root = class_tree(tmp_path / "set", classes)
    checked({"type": "folder", "path": str(root)})
    assert detect_layout(root).type == "folder"


def test_no_false_alarm_on_each_layout_it_reads_and_on_nested_classes(tmp_path: Path):
    checked({"type": "folds", "path": str(fold_tree(tmp_path / "folds"))})
    checked({"type": "splits", "path": str(split_tree(tmp_path / "splits", ("train", "valid", "test")))})
    checked({"type": "patients", "path": str(mura_tree(tmp_path / "mura"))})
    for cls in ("normal", "abnormal"):  # images one folder down (per patient): no layout is claimed
        touch(tmp_path / "nested" / cls / "patient1" / "a.png")
    checked({"type": "folder", "path": str(tmp_path / "nested")})
    checked({"type": "splits", "path": str(tmp_path / "nested")})  # nothing unmistakable: the load will say
    # split folders of the user's own names, with class folders of images: the user's splits, not a folder set
    split_tree(tmp_path / "custom", ("Training", "Testing"))
    checked({"type": "splits", "path": str(tmp_path / "custom"), "train": ["Training"], "test": ["Testing"]})
    checked({"type": "synthetic", "n_patients": 8})  # no path at all


# ---------------------------------------------------------------------------------- keys against keys
def _csv(tmp_path: Path, header: str) -> str:
    path = tmp_path / "labels.csv"
    path.write_text(header + "\nimg/a.png,1,0,0\n")
    return str(path)


def test_label_columns_with_label_column_or_multilabel_names_both_keys(tmp_path: Path):
    csv = _csv(tmp_path, "path,effusion,nodule,fold")
    base = {"type": "csv", "path": csv, "label_columns": ["effusion", "nodule"]}
    with pytest.raises(ConfigError, match=r"data\.source\.label_columns: \['effusion', 'nodule'\] and "
                                          r"data\.source\.label_column 'findings' are both set; label_columns .* is "
                                          r"read and label_column would be ignored\. Keep one of the two keys\.$"):
        checked(base | {"label_column": "findings"})
    with pytest.raises(ConfigError, match=r"data\.source\.label_columns: .* already makes the task multi-label; "
                                          r"data\.source\.multilabel is for label_column .* Remove "
                                          r"data\.source\.multilabel"):
        checked(base | {"multilabel": True})
    checked(base)


def test_a_resolved_config_with_every_default_written_passes_again(tmp_path: Path):
    """validate prints every key at its default; feeding that back must neither fail nor warn."""
    raw = {"data": {"source": {"type": "folds", "path": str(fold_tree(tmp_path / "f"))}}}
    resolved = yaml.safe_load(dump_config(parse_checked_config(raw)))
    assert resolved["cv"]["n_folds"] == 5 and resolved["cv"]["val_fraction"] == 0.2
    checked(resolved["data"]["source"], **{k: v for k, v in resolved.items() if k != "data"})
    csv = {"type": "csv", "path": _csv(tmp_path, "path,a,b,fold"), "label_columns": ["a", "b"]}
    resolved = yaml.safe_load(dump_config(parse_checked_config({"data": {"source": csv}})))
    assert resolved["data"]["source"]["label_column"] == "label" and resolved["data"]["source"]["multilabel"] is False
    checked(resolved["data"]["source"])


def test_n_folds_with_predefined_folds_is_an_error_naming_the_subset_key(tmp_path: Path):
    folds = {"type": "folds", "path": str(fold_tree(tmp_path / "f"))}
    with pytest.raises(ConfigError, match=r"cv\.n_folds: 2 is not used: the study runs every one of the data's own "
                                          r"folds \(data\.source\.type: folds\)\. To run some of them set cv\.folds "
                                          r"\(medclf run --folds 0,3\); remove cv\.n_folds\.$"):
        checked(folds, cv={"n_folds": 2})
    with_fold_column = {"type": "csv", "path": _csv(tmp_path, "path,label,patient_id,fold")}
    with pytest.raises(ConfigError, match=r"cv\.n_folds: 3 is not used: .* \(the fold column 'fold' of labels\.csv\)"):
        checked(with_fold_column, cv={"n_folds": 3})
    renamed = with_fold_column | {"fold_column": "split_k"}  # the header has no such column: n_folds is used
    checked(renamed, cv={"n_folds": 3})
    checked(folds, cv={"folds": [0, 2]})


def test_resplit_by_patient_with_fold_folders_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"cv\.resplit_by_patient: true re-splits the data's own train/val/test "
                                          r"splits, but predefined fold folders .* are fixed by design"):
        checked({"type": "folds", "path": str(fold_tree(tmp_path / "f"))}, cv={"resplit_by_patient": True})


@pytest.mark.parametrize(("layout", "cv", "match"), [
    ("folds", {"val_fraction": 0.3}, r"^cv\.val_fraction: 0\.3 is not used with predefined folds \(data\.source\.type: "
                                     r"folds\): each fold's train, valid and test folders are used\. Remove the key\.$"),
    ("folds", {"test_fraction": 0.1}, r"^cv\.test_fraction: 0\.1 is not used with predefined folds"),
    ("folds", {"pool": ["train", "val"]}, r"^cv\.pool: \['train', 'val'\] is not used with predefined folds"),
    ("folds", {"mode": "holdout"}, r"^cv\.mode: 'holdout' is not used with predefined folds"),
    ("splits", {"mode": "holdout", "n_folds": 3}, r"^cv\.n_folds: 3 is not used in cv\.mode: holdout, which trains "
                                                  r"one fold on the data's own train split"),
    ("splits", {"mode": "holdout", "pool": ["val"]}, r"^cv\.pool: \['val'\] is not used in cv\.mode: holdout"),
])
def test_a_key_the_layout_ignores_is_a_named_warning(tmp_path: Path, layout: str, cv: dict, match: str):
    root = fold_tree(tmp_path / "d") if layout == "folds" else split_tree(tmp_path / "d")
    with pytest.warns(ConfigWarning, match=match):
        parse_checked_config({"data": {"source": {"type": layout, "path": str(root)}}, "cv": cv})


def test_defaults_never_warn(tmp_path: Path):
    checked({"type": "folds", "path": str(fold_tree(tmp_path / "f"))})
    checked({"type": "splits", "path": str(split_tree(tmp_path / "s"))}, cv={"mode": "holdout"})


# ------------------------------------------------------------------------------------------------ device
@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_cuda_on_a_machine_without_it_is_an_error_naming_what_is_there(no_gpu):
    with pytest.raises(ConfigError, match=r"training\.device: 'cuda' is not on this machine \(no CUDA device is "
                                          r"available\)\. Available here: auto, cpu\.$"):
        checked({"type": "synthetic"}, training={"device": "cuda"})
    with pytest.raises(ConfigError, match=r"training\.precision: training\.device 'auto' trains on the CPU here, "
                                          r"and 'fp16' needs a CUDA device"):
        checked({"type": "synthetic"}, training={"precision": "fp16"})
    config = parse_checked_config({"data": {"source": {"type": "synthetic"}}, "training": {"device": "cuda"}},
                                  check_device=False)  # a Ray cluster's head: the workers check it
    assert config.training.device == "cuda"
    check_config(config, check_device=False)


def test_bf16_on_the_cpu_is_checked_against_the_cpus_instructions(monkeypatch, no_gpu):
    from medclf.training import device

    monkeypatch.setattr(device, "_cpu_capabilities", lambda: {"cpu_name": "Test CPU", "avx2": True})
    with pytest.raises(ConfigError, match=r"training\.precision: training\.device 'cpu' trains on the CPU here, and "
                                          r"'bf16' on the CPU needs AVX512-BF16 or AMX-BF16 instructions \(Arm: "
                                          r"BF16\), which Test CPU lacks"):
        checked({"type": "synthetic"}, training={"device": "cpu", "precision": "bf16"})
    monkeypatch.setattr(device, "_cpu_capabilities", lambda: {"cpu_name": "Test CPU", "amx_bf16": True})
    checked({"type": "synthetic"}, training={"device": "cpu", "precision": "bf16"})


def test_compile_with_a_probe_stage_after_an_sgd_stage_is_refused():
    def check(training: dict) -> None:
        with pytest.warns(ConfigWarning, match="randomly initialised backbone"):  # a probe of pretrained: false
            parse_checked_config({"data": {"source": {"type": "synthetic"}}, "training": training})

    with pytest.raises(ConfigError, match=r"training\.compile: true compiles the model before its first sgd stage, "
                                          r"and a probe stage after it .* \(stage kinds here: sgd, probe\)"):
        check({"compile": True, "stages": [{"epochs": 1}, {"kind": "probe"}]})
    check({"compile": True, "recipe": "probe_finetune", "epochs": 3})  # the probe first: compiled after it


def test_compile_without_a_cxx_compiler_is_refused_before_training(monkeypatch):
    monkeypatch.setenv("CXX", "medclf-no-such-c++")
    with pytest.raises(ConfigError, match=r"training\.compile: true needs a C\+\+ compiler .* 'medclf-no-such-c\+\+' "
                                          r"\(\$CXX\) is not on PATH"):
        checked({"type": "synthetic"}, training={"compile": True})
    parse_checked_config({"data": {"source": {"type": "synthetic"}}, "training": {"compile": True}},
                         check_device=False)  # a Ray cluster's head: the workers compile, and check it


def test_an_index_beyond_the_device_count_and_an_absent_mps(monkeypatch, no_gpu):
    def problems(device: str) -> list:
        return list(validation._device_problems(SimpleNamespace(device=device, precision="auto", compile=False)))

    assert problems("mps") == [("training.device", "'mps' is not on this machine (mps is not available). Available "
                                "here: auto, cpu", "mps")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert validation.available_devices() == ["auto", "cpu", "cuda", "cuda:0", "cuda:1"]
    assert problems("cuda:1") == []
    assert problems("cuda:2")[0][1] == ("'cuda:2' is not on this machine (it has 2 CUDA device(s), numbered from 0). "
                                        "Available here: auto, cpu, cuda, cuda:0, cuda:1")


def test_a_sweep_sent_to_a_ray_cluster_skips_the_device_check(tmp_path: Path, no_gpu):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": {"type": "synthetic", "n_patients": 8}},
                                    "training": {"device": "cuda"},
                                    "sweep": {"variants": {"a": {}, "b": {"training.optimizer.lr": 0.01}}}}))
    with pytest.raises(ConfigError, match=r"^variant 'a' of .* training\.device: 'cuda' is not on this machine"):
        load_sweep(path)
    plan = load_sweep(path, check_device=False)
    assert [v.config.training.device for v in plan.variants] == ["cuda", "cuda"]


# ------------------------------------------------------------------------------------------- probe stages
SYNTHETIC = {"type": "synthetic"}


@pytest.mark.parametrize(("training", "model", "match"), [
    ({"recipe": "linear_probe", "loss": {"name": "focal"}}, {},
     r"training\.loss\.name: 'focal' has no linear-probe analogue.* takes loss cross_entropy or bce"),
    ({"recipe": "probe_finetune", "loss": {"name": "bce", "pos_weight": 2.0}}, {},
     r"training\.loss\.pos_weight: .* weighs classes only by training\.loss\.class_weights"),
    ({"recipe": "linear_probe"}, {"head": {"hidden": [32]}},
     r"model\.head\.hidden: .* hidden layers \[32\] sit between them. Remove model\.head\.hidden"),
])
def test_a_probe_stage_refuses_what_a_logistic_regression_cannot_fit(training, model, match):
    with pytest.raises(ConfigError, match=match):
        checked(SYNTHETIC, training=training, model={"pretrained": True, **model})


def test_a_probe_on_random_features_is_allowed_and_warned_of():
    checked(SYNTHETIC, training={"recipe": "linear_probe", "loss": {"class_weights": "balanced"}},
            model={"pretrained": True})
    with pytest.warns(ConfigWarning, match=r"model\.pretrained: false: the probe stage \(training\.stages\.0\.kind\)"):
        parse_checked_config({"data": {"source": SYNTHETIC}, "training": {"recipe": "linear_probe"}})
