"""medclf.inference.predict: TTA from model.json, engines, and patient / study aggregation of predictions."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dicom_files import random_pixels, write_dicom
from medclf.config import ModelConfig
from medclf.errors import ConfigError, ModelError
from medclf.inference.predict import ensemble_proba, model_tta, predict_inputs
from medclf.models import build_model
from medclf.training import Runtime, device, predict_proba

CLASSES = ["blank", "circle", "square"]


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _probs(row: dict) -> np.ndarray:
    return np.array([float(row[f"prob_{c}"]) for c in CLASSES])


def test_model_tta_reads_model_json_and_refuses_a_bad_entry():
    assert model_tta({}) == [] and model_tta({"tta": None}) == []
    assert model_tta({"tta": ["hflip", "vflip"]}) == ["hflip", "vflip"]
    with pytest.raises(ModelError, match=r"fold-0/model.json: 'tta' must be a list of \['hflip', 'vflip'\], got "
                                         r"\['rot90'\]"):
        model_tta({"tta": ["rot90"]}, source="fold-0/model.json")


def test_ensemble_proba_applies_each_models_tta():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=3)
    model.spec = model.spec | {"activation": "softmax", "tta": ["hflip"]}
    images = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8)
    cpu = torch.device("cpu")
    runtime = Runtime(device=cpu, amp_dtype=None, channels_last=False)
    got = ensemble_proba([(0, model)], images, device=cpu)
    expected = predict_proba(model, images, batch_size=64, runtime=runtime, tta=["hflip"])
    np.testing.assert_allclose(got, expected, atol=1e-7)
    plain = predict_proba(model, images, batch_size=64, runtime=runtime)
    assert np.abs(got - plain).max() > 1e-6  # the random network is flip-sensitive: TTA was applied


def _varied(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """A random ``name`` classifier (3 classes, 32 px) whose probabilities differ well between its test images."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), in_chans=1, n_classes=3, size_hw=(32, 32))
    with torch.no_grad():
        model.head_module().weight.mul_(10)  # a random head's logits are all near 0: every image near 1/3
    model.spec = model.spec | {"activation": "softmax", "tta": ["hflip"]}
    ramp = torch.linspace(0.05, 1, 6).view(6, 1, 1, 1)  # dark to bright images: features that differ
    images = (torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * ramp * 255).to(torch.uint8)
    return model, images


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "test_resnet"])
def test_ensemble_proba_runs_channels_last_at_the_probabilities_of_contiguous_fp32(name):
    model, images = _varied(name)
    reference = copy.deepcopy(model)
    cpu = torch.device("cpu")
    got = ensemble_proba([(0, model)], images, batch_size=4, device=cpu)
    # prediction runs channels-last on the CPU for every model (the plain ResNet too, unlike its training)
    assert model.memory_format == torch.channels_last
    expected = predict_proba(reference, images, batch_size=4, tta=["hflip"],
                             runtime=Runtime(device=cpu, amp_dtype=None, channels_last=False))
    assert reference.memory_format == torch.contiguous_format and np.ptp(expected, axis=0).max() > 0.05
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_ensemble_proba_in_bf16_runs_where_the_cpu_has_bf16_and_is_refused_elsewhere(monkeypatch):
    model, images = _varied("test_resnet")
    cpu = torch.device("cpu")
    exact = ensemble_proba([(0, model)], images, device=cpu)
    monkeypatch.setattr(device, "_cpu_capabilities", lambda: {"cpu_name": "Test CPU", "amx_bf16": True})
    low = ensemble_proba([(0, model)], images, device=cpu, precision="bf16")
    assert low.dtype == np.float64 and 0 < np.abs(low - exact).max() < 0.05  # bf16 ran, and stayed close
    np.testing.assert_allclose(low.sum(axis=1), 1, atol=1e-6)  # probabilities taken in fp32
    monkeypatch.setattr(device, "_cpu_capabilities", lambda: {"cpu_name": "Test CPU", "avx2": True})
    with pytest.raises(ConfigError, match=r"^prediction precision 'bf16' on the CPU needs AVX512-BF16 or AMX-BF16 "
                                          r"instructions \(Arm: BF16\), which Test CPU lacks"):
        ensemble_proba([(0, model)], images, device=cpu, precision="bf16")


def _patient_csv(tiny_splits: Path, tmp_path: Path) -> Path:
    """Five test images: patient p1 (2 images, one study s1), p2 (2 images, studies s2, s3), one without ids."""
    test = tiny_splits / "test"
    rows = [("blank/blank_0.png", "p1", "s1"), ("blank/blank_1.png", "p1", "s1"),
            ("circle/circle_0.png", "p2", "s2"), ("square/square_0.png", "p2", "s3"),
            ("square/square_1.png", "", "")]
    path = tmp_path / "inputs.csv"
    path.write_text("path,patient_id,study_id\n" + "".join(f"{test / p},{pa},{st}\n" for p, pa, st in rows))
    return path


def test_predict_aggregates_images_to_patients_and_studies(trained_run: Path, tiny_splits: Path, tmp_path: Path):
    out = tmp_path / "pred.csv"
    result = predict_inputs(trained_run, [_patient_csv(tiny_splits, tmp_path)], out=out)
    assert result.written == [out, tmp_path / "pred_patients.csv", tmp_path / "pred_studies.csv"]
    images = {Path(r["path"]).name: _probs(r) for r in _read(out)}
    patients = {r["patient_id"]: r for r in _read(tmp_path / "pred_patients.csv")}
    square_1 = str(tiny_splits / "test" / "square" / "square_1.png")
    assert set(patients) == {"p1", "p2", square_1}  # an image without an id is its own patient, as in the run
    assert [patients[p]["n_images"] for p in ("p1", "p2", square_1)] == ["2", "2", "1"]
    np.testing.assert_allclose(_probs(patients["p1"]), (images["blank_0.png"] + images["blank_1.png"]) / 2)
    np.testing.assert_allclose(_probs(patients["p2"]), (images["circle_0.png"] + images["square_0.png"]) / 2)
    assert patients["p2"]["predicted"] == CLASSES[int(_probs(patients["p2"]).argmax())]
    studies = {r["study_id"]: r for r in _read(tmp_path / "pred_studies.csv")}
    assert {k: v["n_images"] for k, v in studies.items() if k.startswith("s")} == {"s1": "2", "s2": "1", "s3": "1"}
    assert list(_read(tmp_path / "pred_studies.csv")[0]) == ["study_id", *[f"prob_{c}" for c in CLASSES],
                                                              "predicted", "n_images"]


def test_patient_aggregation_follows_the_runs_config(trained_run: Path, tiny_splits: Path, tmp_path: Path, copy_run):
    run = copy_run(trained_run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["evaluation"]["patient_aggregation"] = "vote"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = predict_inputs(run, [_patient_csv(tiny_splits, tmp_path)])
    predicted = {Path(r["path"]).name: r["predicted"] for r in result.rows}
    p1 = next(r for r in result.units["patient"] if r["patient_id"] == "p1")
    votes = {c: sum(predicted[f"blank_{i}.png"] == c for i in (0, 1)) / 2 for c in CLASSES}
    assert {c: p1[f"prob_{c}"] for c in CLASSES} == votes  # shares of the images' predicted classes


def test_images_without_ids_write_no_unit_files(trained_run: Path, tiny_splits: Path, tmp_path: Path):
    out = tmp_path / "pred.csv"
    result = predict_inputs(trained_run, [tiny_splits / "test" / "blank"], out=out)
    assert result.units == {} and result.written == [out]
    assert not (tmp_path / "pred_patients.csv").exists()


def test_dicom_headers_name_patients_and_studies(trained_run: Path, tmp_path: Path):
    for i, (patient, study) in enumerate([("P7", "1.2.3"), ("P7", "1.2.4"), ("P8", "1.2.5")]):
        write_dicom(tmp_path / "dicom" / f"im{i}.dcm", random_pixels(i), PatientID=patient, StudyInstanceUID=study)
    result = predict_inputs(trained_run, [tmp_path / "dicom"])
    assert {r["patient_id"]: r["n_images"] for r in result.units["patient"]} == {"P7": 2, "P8": 1}
    assert sorted(r["study_id"] for r in result.units["study"]) == ["1.2.3", "1.2.4", "1.2.5"]


def test_predict_passes_bf16_to_the_fold_models(monkeypatch, trained_run: Path, tiny_splits: Path):
    monkeypatch.setattr(device, "_cpu_capabilities", lambda: {"cpu_name": "Test CPU", "avx512_bf16": True})
    seen = []
    real = device.inference_runtime
    monkeypatch.setattr("medclf.inference.predict.inference_runtime",
                        lambda *a, **kw: seen.append(kw["precision"]) or real(*a, **kw))
    inputs = [tiny_splits / "test" / "blank"]
    exact = np.array([_probs(r) for r in predict_inputs(trained_run, inputs).rows])
    low = np.array([_probs(r) for r in predict_inputs(trained_run, inputs, precision="bf16").rows])
    assert set(seen) == {"fp32", "bf16"} and len(seen) % 2 == 0  # every fold model, once per prediction
    assert 0 < np.abs(low - exact).max() < 0.05


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"engine": "tensorrt"}, r"--engine must be one of auto, torch, onnx, got 'tensorrt'"),
    ({"engine": "onnx", "fold": 0}, r"--fold chooses a torch fold model"),
    ({"engine": "torch", "model": Path("model.onnx")}, r"--model names an exported ONNX model; it needs --engine onnx"),
    ({"engine": "onnx", "precision": "bf16"}, r"precision 'bf16' runs the torch engine's fold models; the ONNX "),
])
def test_engine_options_that_do_not_fit_are_refused(trained_run: Path, tiny_splits: Path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        predict_inputs(trained_run, [tiny_splits / "test" / "blank"], **kwargs)


def test_the_onnx_engine_without_an_export_says_how_to_make_one(trained_run: Path, tiny_splits: Path, tmp_path: Path):
    with pytest.raises(ModelError, match=r"model.onnx does not exist; .*`medclf export RUN_DIR`"):
        predict_inputs(trained_run, [tiny_splits / "test" / "blank"], engine="onnx", model=tmp_path)


def test_the_default_prediction_batch_holds_a_fixed_number_of_pixels():
    from medclf.inference.predict import predict_batch_size

    assert predict_batch_size((28, 28)) == 256  # small images: the cap
    assert predict_batch_size((224, 224)) == 16 and predict_batch_size((112, 112)) == 64
    assert predict_batch_size((4096, 4096)) == 1  # never none


def test_a_run_trained_in_bf16_scores_its_folds_in_fp32_as_predict_does(monkeypatch, tiny_splits: Path,
                                                                         tmp_path: Path):
    """A run trained with ``precision: bf16`` (on a CPU with bf16 instructions) scores each fold's predictions.csv
    in fp32, so a later ``medclf predict`` (fp32 by default) gives the same numbers."""
    from medclf.config import parse_config
    from medclf.experiments.study import run_study
    from tiny_data import tiny_study

    monkeypatch.setattr(device, "_cpu_capabilities", lambda: {"cpu_name": "Test CPU", "avx512_bf16": True})
    run = tmp_path / "run"
    run_study(parse_config(tiny_study(tiny_splits, tmp_path / "cache", training={"epochs": 1, "device": "cpu",
                                                                                   "precision": "bf16"})), run)
    metrics = yaml.safe_load((run / "fold-0" / "metrics.json").read_text())
    assert metrics["runtime"]["precision"] == "bfloat16"  # trained in bf16
    scored = {Path(r["id"]).name: _probs(r) for r in _read(run / "fold-0" / "predictions.csv")
              if r["split"] == "test"}
    test_images = sorted((tiny_splits / "test").rglob("*.png"))
    out = tmp_path / "pred.csv"
    predict_inputs(run, test_images, fold=0, out=out, engine="torch")
    again = {Path(r["path"]).name: _probs(r) for r in _read(out)}
    assert scored.keys() == again.keys() and len(scored) == len(test_images)
    for name, probs in scored.items():
        np.testing.assert_allclose(again[name], probs, rtol=0, atol=1e-5, err_msg=name)
