"""Predict new images with a finished run: the mean probabilities of its fold models (or one fold).

Reads only the run folder (``fold-<k>/model.json`` and ``model.safetensors``): each model carries its class
names and preprocessing, so the images are decoded exactly as in training.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from medclf.atomic import atomic_write_csv
from medclf.data import Preprocessing, decode_image, list_image_files
from medclf.errors import RunFolderError
from medclf.experiments.rundir import read_json
from medclf.models import Classifier, model_from_spec
from medclf.training import Runtime, predict_proba

__all__ = ["load_fold_models", "predict_images"]


def load_fold_models(run_dir: Path, *, fold: int | None = None) -> list[Classifier]:
    """The complete fold models of ``run_dir`` (or only fold ``fold``), in fold order."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"Run folder {run_dir} does not exist.")
    # a fold is complete (and its model final) once its metrics.json exists: it is written last
    folders = sorted(
        (p for p in run_dir.glob("fold-*") if p.name[5:].isdigit() and (p / "metrics.json").exists()),
        key=lambda p: int(p.name[5:]),
    )
    if fold is not None:
        folders = [p for p in folders if p.name == f"fold-{fold}"]
        if not folders:
            raise RunFolderError(f"{run_dir} has no complete fold {fold}; --fold takes one of its fold numbers.")
    if not folders:
        raise RunFolderError(f"{run_dir} holds no trained model (no fold-*/model.safetensors). Run a study first.")
    from safetensors.torch import load_file

    return [model_from_spec(read_json(p / "model.json"), load_file(str(p / "model.safetensors"))) for p in folders]


def predict_images(
    run_dir: Path,
    inputs: list[str | Path],
    *,
    fold: int | None = None,
    out: Path | None = None,
    batch_size: int = 64,
) -> list[dict]:
    """Class probabilities and the predicted class for each input image.

    Args:
        run_dir: a run folder written by ``medclf run``.
        inputs: image files, folders (searched recursively) or CSV files listing paths.
        fold: use only this fold's model instead of the ensemble of all folds.
        out: where to write the CSV (path, prob_<class>..., predicted); not written when None.
        batch_size: images per forward pass.

    Returns:
        One dict per image, in the CSV's column order.
    """
    models = load_fold_models(run_dir, fold=fold)
    spec = models[0].spec
    class_names = spec["class_names"]
    prep = Preprocessing.from_dict(spec["preprocessing"])
    paths = list_image_files(inputs)
    with ThreadPoolExecutor(max_workers=4) as pool:  # PIL decodes outside the GIL
        images = torch.from_numpy(np.stack(list(pool.map(lambda p: decode_image(p, prep), paths))))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runtime = Runtime(device=device, amp_dtype=None, channels_last=False)
    probs = np.zeros((len(paths), len(class_names)))
    for model in models:
        activation = model.spec.get("activation", "softmax")  # runs before losses other than softmax had none
        probs += predict_proba(model.to(device), images, batch_size=batch_size, runtime=runtime,
                               activation=activation) / len(models)
    rows = [
        {"path": str(p)} | {f"prob_{c}": float(v) for c, v in zip(class_names, row)}
        | {"predicted": class_names[int(row.argmax())]}
        for p, row in zip(paths, probs)
    ]
    if out is not None:
        atomic_write_csv(Path(out), rows, ["path", *[f"prob_{c}" for c in class_names], "predicted"])
    return rows
