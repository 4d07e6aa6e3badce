"""medclf.inference.export: the ONNX graph (normalisation, activation, TTA, fold mean inside), parity, the sidecar."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medclf.config import ModelConfig
from medclf.errors import ModelError
from medclf.inference import export as export_module
from medclf.inference.export import ExportGraph, OnnxModel, export_onnx, parity_images, to_onnx
from medclf.inference.predict import ensemble_proba
from medclf.models import build_model

CPU = torch.device("cpu")


def _model(name: str, *, seed: int, activation: str = "softmax", tta: list[str] | None = None):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(name=name), in_chans=1, n_classes=3 if activation != "binary" else 1)
    model.spec = model.spec | {"class_names": ["a", "b", "c"] if activation != "binary" else ["neg", "pos"],
                               "activation": activation, "tta": tta or [],
                               "preprocessing": {"size_hw": [16, 16], "channels": 1, "resize": "resize"}}
    return model.eval()


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 16, 16), dtype=np.uint8)


def _session(proto) -> OnnxModel:
    return OnnxModel(proto.SerializeToString(), {"class_names": ["?"]})


@pytest.fixture(scope="module")
def resnet_export():
    """A resnet-like fold model with hflip+vflip TTA and a one-logit binary head, exported once for the module."""
    model = _model("test_resnet", seed=0, activation="binary", tta=["hflip", "vflip"])
    return model, to_onnx(ExportGraph([model]), torch.from_numpy(_images(2)))


@pytest.mark.parametrize("n", [1, 5])
def test_resnet_like_export_matches_torch_at_any_batch_size(resnet_export, n: int):
    model, proto = resnet_export
    images = _images(n, seed=n)
    exported = _session(proto).predict(images)
    expected = ensemble_proba([(0, model)], torch.from_numpy(images), device=CPU)
    assert exported.shape == (n, 2)
    assert np.abs(exported - expected).max() <= 1e-4
    np.testing.assert_allclose(exported.sum(axis=1), 1.0, atol=1e-6)


def test_the_graph_takes_uint8_nchw_with_a_dynamic_batch(resnet_export):
    _, proto = resnet_export
    (image,), (probs,) = proto.graph.input, proto.graph.output
    assert image.name == "image" and probs.name == "probabilities"
    assert image.type.tensor_type.elem_type == 2  # onnx.TensorProto.UINT8
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 16, 16]


def test_tta_is_inside_the_graph(resnet_export):
    model, proto = resnet_export
    images = _images(3, seed=7)
    model.spec = model.spec | {"tta": []}
    try:
        without = ensemble_proba([(0, model)], torch.from_numpy(images), device=CPU)
    finally:
        model.spec = model.spec | {"tta": ["hflip", "vflip"]}
    exported = _session(proto).predict(images)
    assert np.abs(exported - without).max() > 1e-6  # the export averaged the flips, which change this model


def test_an_ensemble_of_two_models_is_one_graph_of_their_mean():
    resnet, effnet = _model("test_resnet", seed=1), _model("test_efficientnet", seed=2, tta=["hflip"])
    proto = to_onnx(ExportGraph([resnet, effnet]), torch.from_numpy(_images(2)))
    assert len(proto.graph.input) == 1 and len(proto.graph.output) == 1
    session = _session(proto)
    for n in (1, 5):
        images = _images(n, seed=10 + n)
        exported = session.predict(images)
        mean = ensemble_proba([(0, resnet), (1, effnet)], torch.from_numpy(images), device=CPU)
        single = ensemble_proba([(0, resnet)], torch.from_numpy(images), device=CPU)
        assert np.abs(exported - mean).max() <= 1e-4
        assert np.abs(exported - single).max() > 1e-6


def test_a_saved_model_is_checked_against_its_sidecar(resnet_export, tmp_path: Path):
    _, proto = resnet_export
    data = proto.SerializeToString()
    (tmp_path / "model.onnx").write_bytes(data)
    (tmp_path / "export.json").write_text(json.dumps({"sha256": hashlib.sha256(data).hexdigest(),
                                                      "class_names": ["neg", "pos"]}))
    assert OnnxModel.load(tmp_path).predict(_images(2)).shape == (2, 2)
    (tmp_path / "model.onnx").write_bytes(data[:-10])
    with pytest.raises(ModelError, match=r"model.onnx is not the model .*export.json describes \(its SHA-256"):
        OnnxModel.load(tmp_path / "model.onnx")
    (tmp_path / "export.json").unlink()
    with pytest.raises(ModelError, match=r"export.json does not exist; the ONNX engine needs model.onnx and"):
        OnnxModel.load(tmp_path)


def test_parity_images_are_the_runs_test_images(trained_run: Path):
    spec = json.loads((trained_run / "fold-0" / "model.json").read_text())
    images, description = parity_images(trained_run, spec)
    assert images.shape == (12, 1, 16, 16) and images.dtype == np.uint8
    assert description == "12 test image(s) of the run"
    assert parity_images(trained_run, spec, fold=1, limit=5)[0].shape[0] == 5


def test_parity_falls_back_to_random_images_when_the_data_is_gone(trained_run: Path, copy_run, tmp_path: Path):
    run = copy_run(trained_run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["source"]["path"] = str(tmp_path / "gone")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    spec = json.loads((run / "fold-0" / "model.json").read_text())
    images, description = parity_images(run, spec)
    assert images.shape == (16, 1, 16, 16)
    assert description.startswith("16 random images: the run's data cannot be loaded (") and "gone" in description


def test_a_failed_parity_check_writes_nothing(trained_run: Path, tmp_path: Path, monkeypatch):
    forward = ExportGraph.forward

    def drifting(self, image):  # an exporter bug, simulated: the graph's probabilities drift by 1e-3
        return forward(self, image) + 1e-3

    monkeypatch.setattr(export_module.ExportGraph, "forward", drifting)
    out = tmp_path / "export"
    with pytest.raises(ModelError, match=r"does not reproduce torch: the largest probability difference is "
                                         r"0\.00[0-9]+ \(> 0\.0001\) on 12 test image\(s\) of the run.*nothing was "
                                         r"written"):
        export_onnx(trained_run, fold=0, out=out)
    assert not out.exists()
