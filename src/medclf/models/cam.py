"""Grad-CAM maps of a :class:`~medclf.models.Classifier`, computed by the ``grad-cam`` package.

The target layer is found, not configured: one dummy forward pass with a hook on every module of the network
records which modules yield a spatial feature map (N, C, h, w) with h, w > 1, and the last of them to finish is
the layer Grad-CAM reads (the last feature map before pooling, whatever the timm family or ``layers`` spec).
A map of side 1 is skipped because its Grad-CAM is a constant: at 16 px a ResNet's last stage is 1 x 1, so the
stage before it is used. Vision transformers (timm models with ``patch_embed`` and ``blocks``) have no map after
the patch embedding: their last block's first norm is read, its patch tokens laid out on the patch grid.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from torch import nn

from medclf.errors import ModelError
from medclf.models.factory import Classifier

__all__ = ["ensemble_grad_cam", "grad_cam", "overlay", "predicted_classes", "target_layer", "target_layer_name"]

# images per Grad-CAM pass: bounds the activations and gradients held at once
CAM_BATCH = 32


def _size_hw(model: Classifier) -> tuple[int, int]:
    """The input size the model was trained at (model.json's preprocessing; 64 x 64 when unknown)."""
    spec = getattr(model, "spec", {}) or {}
    size = (spec.get("preprocessing") or {}).get("size_hw") or spec.get("size_hw") or (64, 64)
    return int(size[0]), int(size[1])


def _token_target(net: nn.Module) -> tuple[str, nn.Module] | None:
    """A vision transformer's last block's first norm (grad-cam's advice for ViTs), whose tokens form a grid."""
    blocks = getattr(net, "blocks", None)
    if getattr(net, "patch_embed", None) is None or not isinstance(blocks, nn.Sequential) or not len(blocks):
        return None
    norm = getattr(blocks[-1], "norm1", None)
    return (f"net.blocks.{len(blocks) - 1}.norm1", norm) if isinstance(norm, nn.Module) else None


def _tokens_to_map(net: nn.Module, size_hw: tuple[int, int]):
    """grad-cam's reshape_transform for a ViT: (N, prefix + h*w, C) tokens -> (N, C, h, w), prefix dropped."""
    prefix = int(getattr(net, "num_prefix_tokens", 1))
    patch = net.patch_embed.patch_size
    h, w = size_hw[0] // patch[0], size_hw[1] // patch[1]

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        grid = tokens[:, prefix:prefix + h * w, :]
        return grid.reshape(tokens.shape[0], h, w, tokens.shape[-1]).permute(0, 3, 1, 2)

    return reshape


def _find_target(model: Classifier, size_hw: tuple[int, int]) -> tuple[str, nn.Module]:
    """(qualified name, module) of the last module of ``model.net`` whose output is a spatial map."""
    tokens = _token_target(model.net)
    if tokens is not None:  # tokens have no spatial map after the patch embedding
        return tokens
    found: list[tuple[str, nn.Module]] = []

    def record(name: str, module: nn.Module):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4 and min(output.shape[-2:]) > 1:
                found.append((name, module))  # hooks fire as modules finish: the last entry is the deepest map
        return hook

    # modules whose output is the input (Identity) are skipped: a later real layer may hand back the same tensor
    handles = [m.register_forward_hook(record(f"net.{n}" if n else "net", m)) for n, m in model.net.named_modules()
               if not isinstance(m, nn.Identity)]
    in_chans = int(model.spec.get("in_chans", 1)) if hasattr(model, "spec") else 1
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, in_chans, *size_hw, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not found:
        name = model.spec.get("architecture", "this model") if hasattr(model, "spec") else "this model"
        raise ModelError(
            f"Grad-CAM needs a spatial feature map, but {name} yields none larger than 1 x 1 at "
            f"{size_hw[0]} x {size_hw[1]} px (a dense-only network, or an image too small for its downsampling). "
            "Explain a run whose network has convolutional layers, or train at a larger data.image_size."
        )
    return found[-1]


def target_layer(model: Classifier, *, size_hw: tuple[int, int] | None = None) -> nn.Module:
    """The module whose feature map Grad-CAM reads: the last spatial (h, w > 1) map of ``model.net``.

    Args:
        model: a classifier from :func:`medclf.models.build_model` or :func:`medclf.models.model_from_spec`.
        size_hw: the input size to probe with; default the size in the model's spec.

    Raises:
        ModelError: the network yields no spatial feature map (e.g. a dense-only ``layers`` network).
    """
    return _find_target(model, size_hw or _size_hw(model))[1]


def target_layer_name(model: Classifier, *, size_hw: tuple[int, int] | None = None) -> str:
    """The qualified name (``net.layer4``...) of :func:`target_layer`, for CSVs and logs."""
    return _find_target(model, size_hw or _size_hw(model))[0]


class _ClassScore:
    """The score Grad-CAM differentiates for one image: the class's logit (binary: the logit, negated for class 0)."""

    def __init__(self, category: int, *, binary: bool) -> None:
        self.category, self.binary = category, binary

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if self.binary:  # one logit = log-odds of class 1; class 0's evidence is its negation
            return output[..., 0] if self.category == 1 else -output[..., 0]
        return output[..., self.category]


def _is_binary(model: Classifier) -> bool:
    return getattr(model, "spec", {}).get("activation") == "binary"


def predicted_classes(logits: torch.Tensor, *, binary: bool) -> np.ndarray:
    """Class indices (N,) from logits; every output activation medclf uses is monotone in each logit."""
    if binary:
        return (logits[:, 0] > 0).long().cpu().numpy()
    return logits.argmax(dim=1).cpu().numpy()


def _as_float(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [0, 1], as the training loop feeds the model (normalisation is inside)."""
    return torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float() / 255.0


def grad_cam(
    model: Classifier, images: torch.Tensor | np.ndarray, targets: Sequence[int] | None = None
) -> np.ndarray:
    """Grad-CAM maps of ``images`` (N, C, H, W) uint8: float32 (N, H, W) in [0, 1], at the input size.

    Args:
        model: the classifier; a copy of it is explained, so its mode, hooks and gradients stay as they were.
        images: a uint8 batch as decoded with the model's preprocessing.
        targets: the class index explained for each image; None explains the class each image is predicted.

    Raises:
        ModelError: the network has no spatial feature map.
    """
    x = _as_float(images)
    if targets is not None and len(targets) != len(x):
        raise ValueError(f"grad_cam got {len(targets)} targets for {len(x)} images")
    if len(x) == 0:
        return np.zeros((0, *x.shape[-2:]), dtype=np.float32)
    # A private copy carries grad-cam's hooks, eval mode and gradients: the caller's model is never touched, so a
    # server may keep predicting with it from other threads while a map is computed.
    work = copy.deepcopy(model)
    layer = target_layer(work, size_hw=tuple(x.shape[-2:]))
    reshape = _tokens_to_map(work.net, tuple(x.shape[-2:])) if _token_target(work.net) is not None else None
    binary = _is_binary(work)
    out = []
    with torch.enable_grad(), GradCAM(model=work, target_layers=[layer], reshape_transform=reshape) as cam:
        # an input that requires grad keeps the feature map in the graph even when the backbone is frozen
        cam.compute_input_gradient = True
        for start in range(0, len(x), CAM_BATCH):
            batch = x[start:start + CAM_BATCH]
            if targets is None:
                with torch.no_grad():
                    chosen = predicted_classes(work(batch.to(cam.device)), binary=binary)
            else:
                chosen = np.asarray(targets[start:start + CAM_BATCH], dtype=int)
            out.append(cam(input_tensor=batch, targets=[_ClassScore(int(c), binary=binary) for c in chosen]))
    maps = np.concatenate(out).astype(np.float32)
    return np.clip(np.nan_to_num(maps, nan=0.0), 0.0, 1.0)


def ensemble_grad_cam(
    models: Sequence[Classifier], images: torch.Tensor | np.ndarray, targets: Sequence[int] | None = None
) -> np.ndarray:
    """The mean of the models' Grad-CAM maps (N, H, W) in [0, 1]; every model explains the same class per image.

    With ``targets`` None the class explained is the one the models' mean class scores rank first (softmax, or
    the sigmoid pair of a binary head); callers that already hold the ensemble's probabilities pass its classes.
    """
    if not models:
        raise ValueError("ensemble_grad_cam needs at least one model")
    if targets is None:
        x = _as_float(images)
        scores = 0.0
        with torch.no_grad():
            for model in models:
                was_training = model.training
                logits = model.eval()(x.to(next(model.parameters()).device)).float().cpu()
                model.train(was_training)
                scores = scores + (torch.sigmoid(logits[:, :1]) - 0.5 if _is_binary(model) else logits.softmax(1))
        targets = list(predicted_classes(scores, binary=_is_binary(models[0])))
    maps = [grad_cam(model, images, targets) for model in models]
    return (np.mean(maps, axis=0) if len(maps) > 1 else maps[0]).astype(np.float32)


def overlay(image: np.ndarray, cam: np.ndarray, *, image_weight: float = 0.5) -> np.ndarray:
    """A jet colour map of ``cam`` (H, W) in [0, 1] blended over ``image`` (C, H, W) uint8: uint8 (H, W, 3) RGB."""
    image = np.asarray(image)
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    rgb = rgb.transpose(1, 2, 0).astype(np.float32) / 255.0
    mask = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 0.0, 1.0)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"overlay: cam of shape {mask.shape} does not match the image's {rgb.shape[:2]}")
    return show_cam_on_image(rgb, mask, use_rgb=True, image_weight=image_weight)
