"""The run folder: its layout (``docs/outputs.md``) and how its files are read and written.

Every file is written atomically (:mod:`medclf.atomic`). A fold is complete when its ``metrics.json``
exists: it is written last.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from medclf.atomic import atomic_write_bytes

__all__ = ["fold_dir", "read_json", "save_weights"]


def fold_dir(out: Path, index: int) -> Path:
    return Path(out) / f"fold-{index}"


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def save_weights(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """Save weights as safetensors, atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(path, save(tensors))
