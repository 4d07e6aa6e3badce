"""The real `medclf export` and `medclf predict --engine onnx` / patient aggregation on the session's tiny run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from medclf.cli import app
from medclf.inference.predict import predict_inputs

CLASSES = ["blank", "circle", "square"]
runner = CliRunner()


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def exported(trained_run: Path, tmp_path_factory, cli) -> tuple[Path, Any]:
    """A copy of the session run with the default export (RUN_DIR/export/), made once by the real command."""
    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns(".medclf.lock"))
    return run, cli("export", run, "--format", "onnx")


def test_export_writes_the_ensemble_graph_and_its_sidecar_and_reports_parity(exported):
    run, done = exported
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())  # rich wraps long lines
    assert "exported folds 0, 1 (mean of the folds' probabilities)" in out
    assert "parity on 12 test image(s) of the run: max |p_onnx - p_torch| = " in out
    assert "predicted classes agree on 100.0%" in out
    sidecar = json.loads((run / "export" / "export.json").read_text())
    assert sidecar["class_names"] == CLASSES and sidecar["folds"] == [0, 1] and sidecar["tta"] == []
    assert sidecar["input"] | {"note": None} == {
        "name": "image", "dtype": "uint8", "layout": "NCHW", "shape": ["batch", 1, 16, 16], "channels": 1,
        "size_hw": [16, 16], "value_range": [0, 255], "note": None}
    assert sidecar["preprocessing"] == json.loads((run / "fold-0" / "model.json").read_text())["preprocessing"]
    assert sidecar["positive_class"] is None and isinstance(sidecar["thresholds"], dict)
    parity = sidecar["parity"]
    assert parity["n_images"] == 12 and parity["max_abs_diff"] <= 1e-4 and parity["agreement"] == 1.0
    assert f"{parity['max_abs_diff']:.2e}" in out
    model = onnx.load(run / "export" / "model.onnx")
    onnx.checker.check_model(model)
    assert sidecar["opset"] == next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def test_the_runs_model_json_records_its_tta(trained_run: Path):
    for k in (0, 1):
        assert json.loads((trained_run / f"fold-{k}" / "model.json").read_text())["tta"] == []


def test_predict_with_the_onnx_engine_matches_torch(exported, tiny_splits: Path, tmp_path: Path):
    run, done = exported
    assert done.returncode == 0, done.stderr
    inputs = str(tiny_splits / "test")
    for engine in ("torch", "onnx"):
        result = runner.invoke(app, ["predict", str(run), inputs, "--out", str(tmp_path / f"{engine}.csv"),
                                     "--engine", engine, "--quiet"])
        assert result.exit_code == 0, result.output
        assert f"({engine} engine)" in result.output
    torch_rows, onnx_rows = _read(tmp_path / "torch.csv"), _read(tmp_path / "onnx.csv")
    assert [r["path"] for r in torch_rows] == [r["path"] for r in onnx_rows] and len(torch_rows) == 12
    columns = [f"prob_{c}" for c in CLASSES]
    a = np.array([[float(r[c]) for c in columns] for r in torch_rows])
    b = np.array([[float(r[c]) for c in columns] for r in onnx_rows])
    assert np.abs(a - b).max() <= 1e-4
    assert [r["predicted"] for r in torch_rows] == [r["predicted"] for r in onnx_rows]


def test_predict_takes_the_onnx_engine_only_for_an_export_of_the_runs_current_weights(exported, tiny_splits: Path,
                                                                                      tmp_path: Path):
    run, done = exported
    assert done.returncode == 0, done.stderr
    sidecar_path = run / "export" / "export.json"
    sidecar = json.loads(sidecar_path.read_text())
    assert sorted(sidecar["weights_sha256"]) == ["0", "1"]
    inputs = [tiny_splits / "test"]
    assert predict_inputs(run, inputs).engine == "onnx"  # the default, auto: the export is current
    assert predict_inputs(run, inputs, fold=0).engine == "torch"  # one fold: the export is the ensemble
    try:
        stale = sidecar | {"weights_sha256": sidecar["weights_sha256"] | {"1": "0" * 64}}  # fold 1 retrained since
        for changed in (stale, {k: v for k, v in sidecar.items() if k != "weights_sha256"}):  # or an older export
            sidecar_path.write_text(json.dumps(changed))
            result = runner.invoke(app, ["predict", str(run), *map(str, inputs), "--out", str(tmp_path / "p.csv")])
            assert result.exit_code == 0 and "(torch engine)" in " ".join(result.output.split()), result.output
    finally:
        sidecar_path.write_text(json.dumps(sidecar))


def test_predict_with_a_csv_of_patient_ids_writes_the_patient_file(exported, tiny_splits: Path, tmp_path: Path):
    run, _ = exported
    listing = tmp_path / "scans.csv"
    listing.write_text("path,patient_id\n" + "".join(
        f"{tiny_splits / 'test' / c / f'{c}_{i}.png'},P{c}\n" for c in CLASSES for i in range(3)))
    for engine in ("torch", "onnx"):
        out = tmp_path / engine / "predictions.csv"
        result = runner.invoke(app, ["predict", str(run), str(listing), "--out", str(out), "--engine", engine, "-q"])
        assert result.exit_code == 0, result.output
        assert "predictions_patients.csv" in "".join(result.output.split()) and not (out.parent / "predictions_studies.csv").exists()
        patients = _read(out.parent / "predictions_patients.csv")
        assert [(r["patient_id"], r["n_images"]) for r in patients] == [(f"P{c}", "3") for c in CLASSES]
        images = _read(out)
        mean = np.mean([float(r["prob_circle"]) for r in images if "/circle/" in r["path"]])
        assert float(patients[1]["prob_circle"]) == pytest.approx(mean, abs=1e-9)


def test_export_of_one_fold_and_bad_options(exported, tmp_path: Path):
    run, _ = exported
    bad = runner.invoke(app, ["export", str(run), "--format", "tflite"])
    assert bad.exit_code == 2 and "--format must be one of onnx, got 'tflite'" in " ".join(bad.output.split())
    missing = runner.invoke(app, ["export", str(run), "--fold", "7"])
    assert missing.exit_code == 2 and "has no complete fold 7" in " ".join(missing.output.split())
    assert not (tmp_path / "fold7").exists()
