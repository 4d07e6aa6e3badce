"""The run folder's rules (src/medclf/runfolder.py): completion records, the ensemble, readers and their errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from medclf import runfolder
from medclf.errors import ModelError, RunFolderError
from medclf.runfolder import Predictions

CLASSES = ["a", "b"]


def _fold(run_dir: Path, k: int = 0, **facts) -> Path:
    """A finished fold: a few files, then its complete.json."""
    fd = runfolder.fold_dir(run_dir, k)
    fd.mkdir(parents=True)
    (fd / "metrics.json").write_text(json.dumps({"fold": k, "metrics": {}}))
    rows = [{"split": "test", "id": f"x{i}", "label": "a", "prob_a": 0.75, "prob_b": 0.25, "predicted": "a"}
            for i in range(4)]
    runfolder.write_predictions(fd / "predictions.csv", rows, CLASSES)
    (fd / "model.safetensors").write_bytes(b"\x01" * 64)
    (fd / ".model.safetensors.123.abcdef01.tmp").write_bytes(b"half")  # an atomic temporary: not listed
    runfolder.record_complete(fd, **facts)
    return fd


def test_a_recorded_fold_is_complete_and_lists_its_files_with_size_and_hash(tmp_path: Path):
    fd = _fold(tmp_path, config_fingerprint="c1", data_fingerprint="d1")
    state = runfolder.check_fold(tmp_path, 0, {"config_fingerprint": "c1", "data_fingerprint": "d1"})
    assert state.complete and state.reason is None
    record = json.loads((fd / "complete.json").read_text())
    assert sorted(record["files"]) == ["metrics.json", "model.safetensors", "predictions.csv"]
    assert record["files"]["model.safetensors"]["bytes"] == 64
    assert len(record["files"]["model.safetensors"]["sha256"]) == 64
    assert record["config_fingerprint"] == "c1"


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda fd: (fd / "model.safetensors").unlink(), r"fold-0/model\.safetensors is missing"),
        (lambda fd: (fd / "predictions.csv").write_bytes((fd / "predictions.csv").read_bytes()[:-20]),
         r"fold-0/predictions\.csv is \d+ bytes, complete\.json records \d+ \(truncated or altered\)"),
        (lambda fd: (fd / "model.safetensors").write_bytes(b"\x02" * 64),
         r"fold-0/model\.safetensors was altered \(its SHA-256 differs"),
        (lambda fd: (fd / "complete.json").write_text((fd / "complete.json").read_text()[:30]),
         r"complete\.json is unreadable"),
        (lambda fd: (fd / "complete.json").unlink(), r"complete\.json is missing although .*metrics\.json exists"),
    ],
    ids=["missing", "truncated", "altered", "record-truncated", "legacy"],
)
def test_a_missing_truncated_or_altered_file_makes_the_fold_incomplete(tmp_path: Path, damage, match):
    fd = _fold(tmp_path)
    damage(fd)
    state = runfolder.check_fold(tmp_path, 0)
    assert not state.complete and state.started
    assert state.reason is not None
    assert re.search(match, state.reason), state.reason


def test_a_fold_of_another_config_is_not_complete(tmp_path: Path):
    _fold(tmp_path, config_fingerprint="c1", data_fingerprint="d1")
    state = runfolder.check_fold(tmp_path, 0, {"config_fingerprint": "c1", "data_fingerprint": "d2"})
    assert not state.complete
    assert "data_fingerprint 'd1', this run's is 'd2'" in state.reason


def test_complete_folds_warns_about_damaged_folds_only(tmp_path: Path):
    _fold(tmp_path, 0)
    damaged = _fold(tmp_path, 1)
    (damaged / "predictions.csv").write_text("split,id\n")
    runfolder.fold_dir(tmp_path, 2).mkdir()  # killed while training: quietly unfinished
    (runfolder.fold_dir(tmp_path, 2) / "history.csv").write_text("epoch\n1\n")
    lines: list[str] = []
    assert runfolder.complete_folds(tmp_path, range(4), log=lines.append) == [0]
    assert len(lines) == 1
    assert lines[0].startswith("warning: fold 1 is not complete: ") and "fold-1/predictions.csv" in lines[0]
    assert lines[0].endswith("it will be trained again")
    runfolder.clear_fold(tmp_path, 1)
    assert not runfolder.fold_dir(tmp_path, 1).exists()


# ------------------------------------------------------------------------------------------------ JSON
def test_read_json_names_the_file_and_what_to_do(tmp_path: Path):
    path = tmp_path / "run.json"
    path.write_text('{"config_fingerprint": "61')
    with pytest.raises(RunFolderError, match=r"run\.json is not valid JSON .* truncated or altered; do this\."):
        runfolder.read_json(path, fix="do this")
    with pytest.raises(RunFolderError, match=r"nothing\.json is missing; rerun the command that wrote it\."):
        runfolder.read_json(tmp_path / "nothing.json")
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(RunFolderError, match="cannot be read"):
        runfolder.read_json(path)


# ---------------------------------------------------------------------------------------- predictions
def _preds(ids, probs, labels=None) -> Predictions:
    probs = np.asarray(probs, dtype=float)
    return Predictions(list(ids), labels or ["a"] * len(ids), probs, ["a"] * len(ids))


def test_the_ensemble_averages_each_image_over_the_folds_that_predicted_it(tmp_path: Path):
    f0 = _preds(["x", "y"], [[0.8, 0.2], [0.4, 0.6]])
    f1 = _preds(["x"], [[0.6, 0.4]])  # this fold lacks y (the audit dropped it there)
    ids, labels, probs = runfolder.ensemble_mean([(0, tmp_path / "p0", f0), (1, tmp_path / "p1", f1)],
                                                 multilabel=False)
    assert ids == ["x", "y"] and labels == ["a", "a"]
    np.testing.assert_allclose(probs, [[0.7, 0.3], [0.4, 0.6]])  # y is not halved
    np.testing.assert_allclose(probs.sum(axis=1), 1)


@pytest.mark.parametrize(
    ("row", "multilabel", "match"),
    [
        ([np.nan, 0.5], False, r"\[nan, 0\.5\]; they must be finite, in \[0, 1\] and sum to 1"),
        ([0.5, 0.2], False, r"\[0\.5, 0\.2\]; they must be finite"),
        ([np.inf, 0.0], True, r"\[inf, 0\]; they must be finite and in \[0, 1\]"),
        ([1.5, 0.0], True, r"\[1\.5, 0\]; they must be finite and in \[0, 1\]"),
    ],
)
def test_the_ensemble_refuses_a_row_that_is_not_a_probability(tmp_path: Path, row, multilabel, match):
    good = _preds(["x", "y"], [[0.8, 0.2], [0.4, 0.6]])
    bad = _preds(["x", "y"], [[0.8, 0.2], row])
    with pytest.raises(RunFolderError, match=rf"fold 3 \(.*p3\): the probabilities of image 'y' are {match}"):
        runfolder.ensemble_mean([(0, tmp_path / "p0", good), (3, tmp_path / "p3", bad)], multilabel=multilabel)


def test_a_multilabel_row_need_not_sum_to_one(tmp_path: Path):
    preds = _preds(["x"], [[0.9, 0.8]])
    _, _, probs = runfolder.ensemble_mean([(0, tmp_path / "p", preds)], multilabel=True)
    np.testing.assert_allclose(probs, [[0.9, 0.8]])


def test_the_ensemble_refuses_folds_that_disagree_on_a_label(tmp_path: Path):
    f0 = _preds(["x"], [[0.8, 0.2]], labels=["a"])
    f1 = _preds(["x"], [[0.8, 0.2]], labels=["b"])
    with pytest.raises(RunFolderError, match=r"fold 1 .* labels image 'x' 'b', fold 0 labels it 'a'"):
        runfolder.ensemble_mean([(0, tmp_path / "p0", f0), (1, tmp_path / "p1", f1)], multilabel=False)


def test_a_truncated_predictions_csv_reads_as_nan_and_is_refused(tmp_path: Path):
    fd = _fold(tmp_path)
    text = (fd / "predictions.csv").read_text()
    (fd / "predictions.csv").write_text(text[: text.rindex(",0.25")])  # the last row loses its last cells
    test = runfolder.read_predictions(fd / "predictions.csv", CLASSES)["test"]
    assert len(test) == 4 and np.isnan(test.probs[-1, 1])
    with pytest.raises(RunFolderError, match=r"image 'x3' are \[0\.75, nan\]"):
        runfolder.ensemble_mean([(0, fd / "predictions.csv", test)], multilabel=False)


def test_read_predictions_names_the_line_of_a_cell_that_is_not_a_number(tmp_path: Path):
    fd = _fold(tmp_path)
    lines = (fd / "predictions.csv").read_text().splitlines()
    lines[2] = lines[2].replace("0.75", "zero")
    (fd / "predictions.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunFolderError, match=r"predictions\.csv line 3: prob_a is 'zero', not a number"):
        runfolder.read_predictions(fd / "predictions.csv", CLASSES)
    with pytest.raises(RunFolderError, match=r"lacks the columns prob_c"):
        runfolder.read_predictions(fd / "predictions.csv", ["a", "c"])


def test_non_finite_model_outputs_are_refused_naming_where():
    runfolder.check_probabilities(np.array([[0.5, 0.5]]), where="fold 0", fix="x")
    with pytest.raises(ModelError, match=r"fold 1 \(f\): .* non-finite probabilities .* for 1 of 2 images .*; fix"):
        runfolder.check_probabilities(np.array([[0.5, 0.5], [np.nan, np.nan]]), where="fold 1 (f)", fix="fix")


def test_weights_that_are_not_safetensors_are_a_run_folder_error(tmp_path: Path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.safetensors"
    runfolder.save_weights(path, {"w": torch.ones(2, 3)})
    assert runfolder.load_weights(path, fix="retrain")["w"].shape == (2, 3)
    path.write_bytes(b"\x9c" * path.stat().st_size)  # garbage of the same size
    with pytest.raises(RunFolderError, match=r"model\.safetensors does not load as safetensors weights .*; retrain"):
        runfolder.load_weights(path, fix="retrain")
    with pytest.raises(RunFolderError, match=r"missing\.safetensors is missing; retrain"):
        runfolder.load_weights(tmp_path / "missing.safetensors", fix="retrain")


def test_prediction_columns_are_the_contract():
    assert runfolder.prediction_columns(["neg", "pos"]) == ["split", "id", "label", "prob_neg", "prob_pos", "predicted"]
    assert runfolder.predict_output_columns(["neg"]) == ["path", "prob_neg", "predicted"]
    assert runfolder.fold_dir(Path("r"), 3) == Path("r/fold-3")
