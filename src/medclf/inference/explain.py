"""Explain a finished run's predictions: a Grad-CAM overlay per image and a CSV of what was explained.

The map of an ensemble is the mean of its fold models' maps, each explaining the same class (the ensemble's
prediction, or the class asked for). Each PNG shows the image on the left and its overlay on the right, both
enlarged by whole pixels (nearest neighbour) to at least :data:`MIN_SIDE` px so a 28 px image stays readable.
"""

from __future__ import annotations

import io
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medclf import runfolder
from medclf.atomic import atomic_write_bytes, atomic_write_csv
from medclf.data import Preprocessing, decode_image, list_image_files
from medclf.errors import ModelError, RunFolderError
from medclf.inference.predict import ensemble_proba, fold_models
from medclf.models.cam import ensemble_grad_cam, overlay, target_layer_name

__all__ = ["EXPLANATIONS", "MIN_SIDE", "explain_images", "explanation_png", "safe_png_names"]

EXPLANATIONS = "explanations.csv"
MIN_SIDE = 256  # px: the smallest side of each half of a written PNG
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_png_names(paths: list[Path]) -> list[str]:
    """One PNG file name per input: its stem with anything but letters, digits, ``._-`` replaced, made unique.

    Only the file's stem is used, never a folder, so no input can name a path outside the output folder.
    """
    names: list[str] = []
    taken: set[str] = set()
    for path in paths:
        stem = _UNSAFE.sub("_", Path(path).stem).strip("._")[:80] or "image"
        name, n = f"{stem}.png", 1
        while name.lower() in taken:  # case-insensitive: the folder may be on a case-insensitive file system
            n += 1
            name = f"{stem}-{n}.png"
        taken.add(name.lower())
        names.append(name)
    return names


def explanation_png(image: np.ndarray, cam: np.ndarray) -> bytes:
    """PNG bytes of ``image`` (C, H, W) uint8 beside its Grad-CAM overlay, enlarged to :data:`MIN_SIDE` px."""
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    pair = np.concatenate([rgb.transpose(1, 2, 0), overlay(image, cam)], axis=1)
    scale = max(1, -(-MIN_SIDE // min(image.shape[1:])))
    pair = pair.repeat(scale, axis=0).repeat(scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pair, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _class_index(name: str | None, class_names: list[str], run_dir: Path) -> int | None:
    if name is None:
        return None
    if name not in class_names:
        raise ModelError(f"--class {name!r} is not a class of the model in {run_dir}; its classes are "
                         f"{', '.join(class_names)}.")
    return class_names.index(name)


def explain_images(
    run_dir: Path,
    inputs: list[str | Path],
    *,
    out: Path,
    fold: int | None = None,
    class_name: str | None = None,
    batch_size: int | None = None,
) -> list[dict]:
    """Write one Grad-CAM PNG per input image and ``explanations.csv`` into ``out``.

    Args:
        run_dir: a run folder written by ``medclf run``.
        inputs: image files, folders (searched recursively) or CSV files listing paths, as ``predict`` takes.
        out: the output folder (created).
        fold: explain only this fold's model instead of the ensemble of all folds.
        class_name: the class to explain for every image; default the class each image is predicted.
        batch_size: images per forward pass (default: as ``medclf predict``).

    Returns:
        One dict per image: path, prob_<class>..., predicted, probability (of the predicted class),
        explained, png (file name in ``out``), target_layer.

    Raises:
        DataError: an input does not exist or is not an image.
        ModelError: the class is unknown, or the network has no spatial feature map.
        RunFolderError: the run folder is incomplete or ``out`` is a file.
    """
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file; explain writes a folder of PNGs and {EXPLANATIONS}. "
                             "Give a folder (it is created).")
    loaded = fold_models(run_dir, fold)
    spec = loaded[0][1].spec
    class_names = list(spec["class_names"])
    explained = _class_index(class_name, class_names, run_dir)
    prep = Preprocessing.from_dict(spec["preprocessing"])
    paths = list_image_files(inputs)
    with ThreadPoolExecutor(max_workers=4) as pool:  # PIL decodes outside the GIL
        images = torch.from_numpy(np.stack(list(pool.map(lambda p: decode_image(p, prep), paths))))
    probs = ensemble_proba(loaded, images, batch_size=batch_size, run_dir=run_dir)
    predicted = probs.argmax(axis=1)
    targets = [int(c) for c in predicted] if explained is None else [explained] * len(paths)
    models = [model.cpu() for _, model in loaded]  # Grad-CAM on the CPU: a few images, no device juggling
    layer = target_layer_name(models[0], size_hw=tuple(images.shape[-2:]))
    maps = ensemble_grad_cam(models, images, targets)
    out.mkdir(parents=True, exist_ok=True)
    names = safe_png_names(paths)
    rows = []
    for path, image, cam, row, pred, target, name in zip(paths, images.numpy(), maps, probs, predicted, targets,
                                                         names):
        atomic_write_bytes(out / name, explanation_png(image, cam))
        rows.append({"path": str(path)} | {runfolder.prob_column(c): float(v) for c, v in zip(class_names, row)}
                    | {"predicted": class_names[int(pred)], "probability": float(row[int(pred)]),
                       "explained": class_names[target], "png": name, "target_layer": layer})
    columns = (["path", *runfolder.prob_columns(class_names), "predicted", "probability", "explained", "png",
                "target_layer"])
    atomic_write_csv(out / EXPLANATIONS, rows, columns)
    return rows
