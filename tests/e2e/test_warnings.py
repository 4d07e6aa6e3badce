"""Duplicate and leak warnings that mean something (issue 15): the real ``medclf run`` on a fold-folder set says
nothing about the images every fold holds by design, and names a real copy planted inside one fold, with what
would fix it; the embedded demo's data and config open with no warning at all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from typer.testing import CliRunner

from medclf.cli import app

_SPLIT_OF = ("test", "valid", "train")  # fold k: group k is its test, group k+1 its valid, group k+2 its train


def _fold_tree(root: Path) -> Path:
    """root/Fold{0,1,2}/{train,valid,test}/{a,b}/<image>: the same 12 images (3 groups of 2 per class) in every
    fold, rotated through the splits; each file copied byte for byte, as such sets are shipped."""
    rng = np.random.default_rng(0)
    source = root.parent / "source"
    for i in range(12):
        cls = "ab"[i % 2]
        (source / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(source / cls / f"img{i:02d}.png")
    for k in range(3):
        for i in range(12):
            cls, group = "ab"[i % 2], i // 4
            split = _SPLIT_OF[(group - k) % 3]
            target = root / f"Fold{k}" / split / cls / f"img{i:02d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / cls / f"img{i:02d}.png", target)
    return root


def _config(tmp_path: Path, data: Path, **audit: str):
    from medclf.config import Config

    return Config.model_validate({
        "name": "folds", "seed": 0,
        "data": {"source": {"type": "folds", "path": str(data)}, "image_size": 16,
                 "cache_dir": str(tmp_path / "cache")},
        "model": {"name": "test_resnet"},
        "training": {"epochs": 1, "batch_size": 4, "device": "cpu"},
        "audit": audit,
    }, context={"base_dir": None})


def _prepare(tmp_path: Path, data: Path, name: str) -> tuple[list[str], Path]:
    """prepare_study's log lines (what ``medclf run`` prints before the first fold) and the run folder."""
    from medclf.experiments.study import prepare_study

    lines: list[str] = []
    prepare_study(_config(tmp_path, data), tmp_path / name, log=lines.append)
    return lines, tmp_path / name


def test_images_every_fold_holds_are_no_copies_and_a_real_copy_is_named_with_its_fix(tmp_path: Path) -> None:
    data = _fold_tree(tmp_path / "folds")
    lines, out = _prepare(tmp_path, data, "clean")
    assert lines == []  # 36 entries, 12 images: no copy, no audit summary, no leak
    assert json.loads((out / "data.json").read_text())["duplicates"] == {"count": 0, "groups": []}
    audit = json.loads((out / "audit.json").read_text())
    assert (audit["exact_duplicates"]["count"], audit["near_duplicates"]["count"]) == (0, 0)
    assert audit["folds"] == [{"fold": k, "exact": 0, "near": 0, "patient": 0} for k in range(3)]

    # a real leak inside one fold: fold 0's test image img00 copied into fold 0's own train folder
    shutil.copyfile(data / "Fold0" / "test" / "a" / "img00.png", data / "Fold0" / "train" / "a" / "copy.png")
    lines, out = _prepare(tmp_path, data, "leak")
    assert lines == [
        "warning: 1 image is a byte-identical copy of another (1 group, listed in data.json under duplicates). A copy "
        "in the same split as its original is no leak, it only counts that image twice; it is in another split than "
        "the original, which the leakage audit checks per fold (audit.json)",
        "audit (each fold folder on its own): 1 exact duplicate (1 across splits), 0 near-duplicate pairs (0 across), "
        "0 patients in several splits; see audit.json",
        "warning: fold 0: evaluation images leaking from training: 1 exact (exact/near duplicates of a training "
        "image, images of a training patient); see audit.json",
        "warning: to fix the leaks: set audit.leakage: drop_duplicates (drops the duplicates from the evaluation "
        "splits), or remove the files audit.json names; audit.leakage: fail refuses a run that leaks",
    ]
    assert json.loads((out / "data.json").read_text())["duplicates"] == {
        "count": 1, "groups": [["Fold0/test/a/img00.png", "Fold0/train/a/copy.png"]]}
    audit = json.loads((out / "audit.json").read_text())
    assert audit["exact_duplicates"]["groups"] == [["Fold0/test/a/img00.png", "Fold0/train/a/copy.png"]]
    assert [f["exact"] for f in audit["folds"]] == [1, 0, 0]

    # the real CLI prints them, and refuses the leaking run before training when told to
    path = tmp_path / "leak.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, data, leakage="fail").model_dump(mode="json")))
    done = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "refused"), "--quiet"])
    output = " ".join(done.output.split())
    assert done.exit_code == 2, done.output
    assert "warning: 1 image is a byte-identical copy of another" in output
    assert ("To fix it: set audit.leakage: drop_duplicates (drops the duplicates from the evaluation splits), or "
            "remove the files audit.json names; or set audit.leakage: warn to score them as they are") in output
    assert not list((tmp_path / "refused").glob("fold-*"))  # refused before any fold trained

    # the copy moved next to its original's copy in fold 0's train: counted, said to be no leak, no leak warning
    (data / "Fold0" / "train" / "a" / "copy.png").unlink()
    shutil.copyfile(data / "Fold0" / "train" / "a" / "img08.png", data / "Fold0" / "train" / "a" / "copy.png")
    lines, _ = _prepare(tmp_path, data, "within")
    assert lines == [
        "warning: 1 image is a byte-identical copy of another (1 group, listed in data.json under duplicates). A copy "
        "in the same split as its original is no leak, it only counts that image twice",
        "audit (each fold folder on its own): 1 exact duplicate (0 across splits), 0 near-duplicate pairs (0 across), "
        "0 patients in several splits; see audit.json; none of them leaks: no fold is evaluated on a copy of its "
        "training images or on its training patients",
    ]


def test_the_demo_opens_with_no_warning(tmp_path: Path) -> None:
    from importlib.resources import files

    from medclf.config import load_config
    from medclf.experiments.study import prepare_study

    config = load_config(Path(str(files("medclf") / "resources" / "demo.yaml")))
    lines: list[str] = []
    study = prepare_study(config, tmp_path / "demo", log=lines.append)
    assert lines == []  # no copies, no audit summary, no leak: its phantoms are distinct and its splits grouped
    audit = json.loads((tmp_path / "demo" / "audit.json").read_text())
    assert audit["n_images"] == 1440 and audit["patient_overlap"]["n_patients"] == 180
    assert (audit["exact_duplicates"]["count"], audit["near_duplicates"]["count"]) == (0, 0)
    assert audit["patient_overlap"]["count"] == 0
    assert [f["exact"] + f["near"] + f["patient"] for f in audit["folds"]] == [0] * 5 == [0] * len(study.folds)


def test_the_reports_leak_warning_names_the_fix_that_fits() -> None:
    from medclf.reporting.run_tables import audit_warning

    audit = {"policy": "warn", "locations": {"test": 4, "train": 8}, "patient_overlap": {"count": 2},
             "folds": [{"fold": 0, "exact": 1, "near": 0, "patient": 3}, {"fold": 1, "exact": 0, "near": 0, "patient": 3}]}
    assert audit_warning(audit).text.endswith(
        "To fix it: set audit.leakage: drop_duplicates (or fail), or remove the duplicated files; set "
        "cv.resplit_by_patient: true (re-splits the data's own splits grouped by patient).")
    audit |= {"policy": "drop_duplicates", "dropped": {"0": 1}}
    assert audit_warning(audit).text.endswith(
        "the images of shared patients were kept and still inflate the scores. To fix it: set "
        "cv.resplit_by_patient: true (re-splits the data's own splits grouped by patient).")
    audit |= {"policy": "warn", "locations": {"Fold0/test": 4, "Fold0/train": 8}}
    assert audit_warning(audit).text.endswith(
        "duplicated files; move each shared patient's images into one split of its fold folder.")


def test_the_copies_warning_counts_copies_and_says_which_may_leak() -> None:
    from medclf.data.dataset import ImageSet
    from medclf.experiments.scoring import copies_warning

    ids = np.array(["train/a", "train/b", "train/c", "test/d", "train/e", "val/f"])
    data = ImageSet(images=np.zeros((6, 1, 4, 4), dtype=np.uint8), labels=np.zeros(6, dtype=np.int64), ids=ids,
                    splits=np.array([i.split("/")[0] for i in ids]), class_names=["x", "y"],
                    duplicates=[["train/a", "train/b", "test/d"], ["train/c", "train/e"]])
    assert copies_warning(data) == (
        "warning: 3 images are byte-identical copies of another (2 groups, listed in data.json under duplicates). A "
        "copy in the same split as its original is no leak, it only counts that image twice; 1 of them is in another "
        "split than the original, which the leakage audit checks per fold (audit.json)")
    data.duplicates = [["train/c", "train/e"]]
    assert copies_warning(data).endswith("it only counts that image twice")
    data.duplicates = []
    assert copies_warning(data) is None
