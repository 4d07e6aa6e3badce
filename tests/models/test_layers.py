import pytest
import torch

from medclf.config import ModelConfig, parse_config
from medclf.errors import ConfigError, ModelError
from medclf.models import build_model, count_parameters, model_from_spec

RADIOGRAPH = [
    {"type": "conv", "filters": 64, "kernel": 7, "stride": 2},
    {"type": "maxpool", "size": 2},
    {"type": "conv", "filters": 128, "kernel": 5, "stride": 2},
    {"type": "maxpool", "size": 2},
    {"type": "conv", "filters": 256},
    {"type": "conv", "filters": 384},
    {"type": "conv", "filters": 256},
    {"type": "conv", "filters": 256},
    {"type": "maxpool", "size": 2},
    {"type": "dropout", "rate": 0.5},
    {"type": "dense", "units": 2048},
    {"type": "dropout", "rate": 0.5},
]


def _net(layers, size=64, n_out=2, **kw):
    cfg = ModelConfig(name="layers", layers=layers, **kw)
    return build_model(cfg, in_chans=1, n_classes=n_out, size_hw=(size, size))


def test_the_radiograph_example_is_the_published_network():
    from pathlib import Path

    from medclf.config import load_config
    from medclf.training.losses import n_outputs

    example = Path(__file__).resolve().parents[2] / "examples" / "spec" / "radiograph_cnn.yaml"
    cfg = load_config(example)
    assert cfg.model.layers == ModelConfig(name="layers", layers=RADIOGRAPH).layers  # the layer list checked below
    assert (cfg.data.image_size, cfg.data.channels, cfg.training.loss.name) == (227, 1, "bce")
    assert n_outputs(cfg.training.loss, n_classes=2) == 1  # one sigmoid output


def test_radiograph_cnn_at_227_px_has_the_published_shape():
    model = _net(RADIOGRAPH, size=227, n_out=1)
    feats = model.net.features(torch.zeros(1, 1, 227, 227))
    assert feats.shape == (1, 2048)
    assert model(torch.rand(2, 1, 227, 227)).shape == (2, 1)
    # conv 7x7/2: 227 -> 114, pool -> 57, conv 5x5/2 -> 29, pool -> 14, pool -> 7: 256 * 7 * 7 into dense 2048
    dense = [m for m in model.net.features.modules() if isinstance(m, torch.nn.Linear)][0]
    assert dense.in_features == 256 * 7 * 7


def test_width_mult_doubles_feature_maps_and_insert_adds_layers():
    small = [{"type": "conv", "filters": 8}, {"type": "maxpool"}, {"type": "conv", "filters": 16},
             {"type": "globalpool"}, {"type": "dense", "units": 32}]
    base = _net(small)
    wide = _net(small, width_mult=2.0)
    convs = lambda m: [c.out_channels for c in m.modules() if isinstance(c, torch.nn.Conv2d)]  # noqa: E731
    assert convs(base) == [8, 16] and convs(wide) == [16, 32]
    deep = _net(small, insert={2: [{"type": "conv", "filters": 8}, {"type": "conv", "filters": 8}]})
    assert convs(deep) == [8, 8, 8, 16]
    assert [layer["type"] for layer in deep.spec["layers"]][:4] == ["conv", "maxpool", "conv", "conv"]
    assert count_parameters(wide)["total"] > count_parameters(base)["total"]


def test_residual_block_projects_when_shapes_differ():
    layers = [{"type": "conv", "filters": 8},
              {"type": "residual", "layers": [{"type": "conv", "filters": 8}, {"type": "conv", "filters": 8}]},
              {"type": "residual", "layers": [{"type": "conv", "filters": 16, "stride": 2}]},
              {"type": "globalpool"}]
    model = _net(layers, size=32)
    res = [m for m in model.modules() if m.__class__.__name__ == "Residual"]
    assert isinstance(res[0].shortcut, torch.nn.Identity)
    assert isinstance(res[1].shortcut, torch.nn.Conv2d) and res[1].shortcut.kernel_size == (1, 1)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 2)


def test_dense_only_network_and_round_trip_through_the_spec():
    layers = [{"type": "flatten"}] + [{"type": "dense", "units": 200}, {"type": "dropout", "rate": 0.5}] * 4
    model = _net(layers, size=16).eval()
    clone = model_from_spec(model.spec, model.state_dict()).eval()
    x = torch.rand(3, 1, 16, 16)
    assert torch.equal(model(x), clone(x))


def test_a_layer_that_cannot_take_its_input_names_itself():
    layers = [{"type": "maxpool", "size": 4}, {"type": "maxpool", "size": 4}, {"type": "maxpool", "size": 4}]
    with pytest.raises(ModelError, match=r"model\.layers\[2\] \(maxpool\) cannot take an input of shape \[1, 1, 1\]"):
        _net(layers, size=16)


def test_layer_config_is_validated():
    base = {"data": {"source": {"type": "synthetic"}}}
    with pytest.raises(ConfigError, match=r"needs model\.layers"):
        parse_config(base | {"model": {"name": "layers"}})
    with pytest.raises(ConfigError, match=r"model\.layers\.0\.filterz: unknown key\. Did you mean 'model\.layers\.0\.filters'"):
        parse_config(base | {"model": {"name": "layers", "layers": [{"type": "conv", "filterz": 3}]}})
    with pytest.raises(ConfigError, match=r"need model\.name: layers"):
        parse_config(base | {"model": {"name": "resnet18", "width_mult": 2}})


def test_custom_head_pools_and_stacks_hidden_layers():
    cfg = ModelConfig(name="test_resnet", head={"pool": "avgmax", "batchnorm": True, "hidden": [32],
                                                "dropout": 0.2}, drop_rate=0.1)
    model = build_model(cfg, in_chans=1, n_classes=3)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [32, 3]
    assert model.head_module() is model.head
    clone = model_from_spec(model.spec, model.state_dict())
    assert set(clone.state_dict()) == set(model.state_dict())


def test_drop_path_reaches_timm_and_is_refused_where_absent():
    model = build_model(ModelConfig(name="resnet18", drop_path_rate=0.1), in_chans=3, n_classes=2)
    assert any(m.__class__.__name__ == "DropPath" for m in model.modules())
    with pytest.raises(ModelError, match=r"model\.drop_path_rate: timm's 'vgg11'"):
        build_model(ModelConfig(name="vgg11", drop_path_rate=0.1), in_chans=3, n_classes=2)
