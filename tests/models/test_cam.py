import numpy as np
import pytest
import torch

from medclf.config import ModelConfig
from medclf.errors import ModelError
from medclf.models import build_model
from medclf.models.cam import ensemble_grad_cam, grad_cam, overlay, target_layer, target_layer_name

SIZE = 32
SMALL_CNN = [{"type": "conv", "filters": 8, "kernel": 3}, {"type": "maxpool", "size": 2},
             {"type": "conv", "filters": 8, "kernel": 3}, {"type": "flatten"}, {"type": "dense", "units": 16}]


def _model(name: str, *, n_classes: int = 3, **extra) -> torch.nn.Module:
    cfg = ModelConfig.model_validate({"name": name, "pretrained": False, **extra})
    torch.manual_seed(0)
    return build_model(cfg, in_chans=1, n_classes=n_classes, size_hw=(SIZE, SIZE))


def _images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 1, SIZE, SIZE), dtype=np.uint8))


@pytest.mark.parametrize(("name", "extra", "layer"), [
    ("test_resnet", {}, "net.layer"),
    ("tf_efficientnet_lite0", {}, "net."),
    ("test_convnext", {}, "net.stages"),
    ("densenet121", {"kwargs": {"growth_rate": 8, "block_config": [1, 1, 1, 1]}}, "net.features"),
    ("mobilenetv3_small_050", {}, "net.blocks"),
    ("layers", {"layers": SMALL_CNN}, "net.features"),
])
def test_the_automatic_layer_gives_a_finite_varying_map_of_the_input_size(name, extra, layer):
    model = _model(name, **extra)
    maps = grad_cam(model, _images())
    assert maps.shape == (2, SIZE, SIZE) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert all(m.std() > 0.01 for m in maps)  # not a constant map
    assert target_layer_name(model).startswith(layer)
    assert isinstance(target_layer(model), torch.nn.Module)


def test_a_custom_head_reads_the_feature_map():
    model = _model("test_resnet", head={"hidden": [8]})
    assert target_layer_name(model).startswith("net.layer")
    assert grad_cam(model, _images()).std() > 0.01


def test_the_model_is_left_as_it_was():
    model = _model("test_resnet").to_channels_last().train()
    for p in model.net.parameters():  # a frozen backbone still gets a map: the input carries the gradient
        p.requires_grad_(False)
    maps = grad_cam(model, _images())
    assert maps.std() > 0.01
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert not any(p.requires_grad for p in model.net.parameters())
    assert not model.net.layer1._forward_hooks  # grad-cam's hooks are removed


def test_targets_choose_the_class_explained():
    model = _model("test_resnet").eval()
    images = _images()
    predicted = model(images.float() / 255).argmax(1).tolist()
    assert np.allclose(grad_cam(model, images), grad_cam(model, images, predicted))
    other = [(c + 1) % 3 for c in predicted]
    assert not np.allclose(grad_cam(model, images, other), grad_cam(model, images, predicted), atol=1e-3)


def test_a_binary_head_explains_class_zero_by_the_negated_logit():
    model = _model("test_resnet", n_classes=1)
    model.spec["activation"] = "binary"
    images = _images()
    positive, negative = grad_cam(model, images, [1, 1]), grad_cam(model, images, [0, 0])
    assert positive.std() > 0.01
    assert not np.allclose(positive, negative, atol=0.05)
    # opposite evidence: where one map is hot the other is cold (they overlap only where resizing blurs them)
    assert (positive * negative).mean() < 0.5 * min(positive.mean(), negative.mean() + 1e-3)


def test_an_ensemble_map_is_the_mean_of_the_folds():
    a, b = _model("test_resnet"), _model("test_resnet")
    torch.manual_seed(1)
    for p in b.parameters():
        torch.nn.init.normal_(p, std=0.1)
    images, targets = _images(), [0, 2]
    expected = (grad_cam(a, images, targets) + grad_cam(b, images, targets)) / 2
    assert np.allclose(ensemble_grad_cam([a, b], images, targets), expected, atol=1e-6)
    assert ensemble_grad_cam([a, b], images).shape == (2, SIZE, SIZE)


def test_a_dense_only_network_has_no_map():
    model = _model("layers", layers=[{"type": "flatten"}, {"type": "dense", "units": 8}])
    with pytest.raises(ModelError, match="Grad-CAM needs a spatial feature map.*convolutional layers"):
        grad_cam(model, _images())


def test_overlay_blends_a_colour_map_over_grey_and_rgb_images():
    cam = np.zeros((SIZE, SIZE), dtype=np.float32)
    cam[:8, :8] = 1.0
    grey = overlay(_images(1)[0].numpy(), cam)
    assert grey.shape == (SIZE, SIZE, 3) and grey.dtype == np.uint8
    assert grey[0, 0, 0] > grey[0, 0, 2] or grey[0, 0, 2] < 128  # hot (red) where the map is high
    rgb = overlay(np.full((3, SIZE, SIZE), 128, np.uint8), cam)
    assert rgb[20, 20, 2] > rgb[20, 20, 0]  # cold (blue) where the map is low
    with pytest.raises(ValueError, match="does not match"):
        overlay(np.zeros((1, 8, 8), np.uint8), cam)


def _square_images(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images; class 1 has a bright 8 px square at a random place."""
    x = rng.integers(0, 60, (n, 1, SIZE, SIZE)).astype(np.uint8)
    y = rng.integers(0, 2, n)
    for i in np.flatnonzero(y):
        r, c = rng.integers(0, SIZE - 8, 2)
        x[i, 0, r:r + 8, c:c + 8] = 255
    return torch.from_numpy(x), torch.from_numpy(y)


def test_the_map_changes_when_the_weights_are_randomised():
    """Adebayo et al.'s cascading-randomisation sanity check: the map depends on what the model learnt."""
    rng = np.random.default_rng(0)
    model = _model("layers", n_classes=2, layers=SMALL_CNN)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        x, y = _square_images(32, rng)
        loss = torch.nn.functional.cross_entropy(model(x.float() / 255), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    x, y = _square_images(64, rng)
    x = x[y == 1][:8]
    trained = grad_cam(model, x, [1] * len(x))
    torch.manual_seed(123)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    randomised = grad_cam(model, x, [1] * len(x))
    correlation = np.corrcoef(trained.ravel(), randomised.ravel())[0, 1]
    assert correlation < 0.9
    # and the trained map looks at the square: hotter inside it than outside
    inside = x[:, 0].numpy() == 255
    assert trained[inside].mean() > trained[~inside].mean()


def test_a_vision_transformer_reads_its_last_block_tokens_on_the_patch_grid():
    model = _model("test_vit", kwargs={"img_size": SIZE, "patch_size": 8})
    assert target_layer_name(model) == f"net.blocks.{len(model.net.blocks) - 1}.norm1"
    maps = grad_cam(model, _images())
    assert maps.shape == (2, SIZE, SIZE) and np.isfinite(maps).all() and maps.std() > 0.01
