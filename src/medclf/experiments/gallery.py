"""The report's gallery of confidently wrong images, kept at the end of a study so the report reads files only.

Each kept image carries its Grad-CAM overlay (:mod:`medclf.models.cam`) of the class it was predicted, computed
with the model that made the prediction: the mean of every fold's map for the ensemble's test images, the one
fold's map for a fold's own test or holdout/validation images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medclf import runfolder
from medclf.data import ImageSet
from medclf.errors import ModelError
from medclf.models import Classifier, model_from_spec
from medclf.models.cam import ensemble_grad_cam, overlay
from medclf.runfolder import GalleryChoice, Predictions, fold_dir

__all__ = ["write_gallery"]


def write_gallery(out: Path, data: ImageSet, fold_indices: list[int]) -> None:
    """Keep the images of the report's gallery (:func:`medclf.runfolder.choose_gallery`) in ``gallery.npz``.

    The report then shows them without loading the data again; with nothing misclassified there is no file.
    """
    names = data.class_names
    ensemble_csv = out / runfolder.ENSEMBLE / runfolder.PREDICTIONS
    ensemble = runfolder.read_predictions(ensemble_csv, names).get("test") if ensemble_csv.exists() else None
    folds = [(k, runfolder.read_predictions(fold_dir(out, k) / runfolder.PREDICTIONS, names)) for k in fold_indices]
    choice = runfolder.choose_gallery(names, multilabel=data.multilabel, ensemble=ensemble, folds=folds)
    (out / runfolder.GALLERY).unlink(missing_ok=True)
    if choice is None or not choice.worst:
        return
    position = {str(i): k for k, i in enumerate(data.ids)}
    rows = [i for i, _ in choice.worst if choice.predictions.ids[i] in position]
    ids = [choice.predictions.ids[i] for i in rows]
    images = data.images[[position[i] for i in ids]]
    overlays = _overlays(out, choice, rows, images, _predicting_folds(choice, ensemble, folds))
    runfolder.write_gallery(out, ids, images, overlays)


def _predicting_folds(
    choice: GalleryChoice, ensemble: Predictions | None, folds: list[tuple[int, dict[str, Predictions]]]
) -> list[list[int]]:
    """For each row of ``choice.predictions``, the folds whose models made that prediction.

    Follows :func:`medclf.runfolder.choose_gallery`'s order of sources: the ensemble's test predictions (every
    fold), a fold's test predictions (that fold), else every fold's holdout/validation rows pooled in fold order.
    """
    n = len(choice.predictions)
    if choice.predictions is ensemble:
        return [[k for k, _ in folds]] * n
    for k, predictions in folds:
        if predictions.get("test") is choice.predictions:
            return [[k]] * n
    for split in ("holdout", "val"):
        owners = [k for k, p in folds if split in p for _ in range(len(p[split]))]
        if len(owners) == n:
            return [[k] for k in owners]
    return [[k for k, _ in folds]] * n  # not reached while choose_gallery keeps its sources


def _load(out: Path, k: int) -> Classifier:
    folder = fold_dir(out, k)
    fix = "rerun medclf run with the run's config.yaml into the run folder"
    spec = runfolder.read_json(folder / "model.json", fix=fix)
    return model_from_spec(spec, runfolder.load_weights(folder / "model.safetensors", fix=fix),
                           source=folder / "model.json")


def _overlays(out: Path, choice: GalleryChoice, rows: list[int], images: np.ndarray,
              owners: list[list[int]]) -> np.ndarray | None:
    """uint8 (N, H, W, 3) Grad-CAM overlays of the predicted class; None when the network has no feature map."""
    predicted = choice.predictions.probs[rows].argmax(axis=1)  # multi-label: the most probable label
    models: dict[int, Classifier] = {}
    result = np.zeros((len(rows), *images.shape[-2:], 3), dtype=np.uint8)
    try:
        # images explained by the same folds go through Grad-CAM together (one group for an ensemble)
        for group in sorted({tuple(owners[r]) for r in rows}):
            members = [n for n, r in enumerate(rows) if tuple(owners[r]) == group]
            fold_models = [models.setdefault(k, _load(out, k)) for k in group]
            maps = ensemble_grad_cam(fold_models, images[members], [int(predicted[n]) for n in members])
            for n, cam in zip(members, maps):
                result[n] = overlay(images[n], cam)
    except ModelError:  # a dense-only network: the gallery keeps its images without overlays
        return None
    return result
