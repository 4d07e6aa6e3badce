"""The report's gallery of confidently wrong images, kept at the end of a study so the report reads files only."""

from __future__ import annotations

from pathlib import Path

from medclf import runfolder
from medclf.data import ImageSet
from medclf.runfolder import fold_dir

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
    ids = [choice.predictions.ids[i] for i, _ in choice.worst]
    position = {str(i): k for k, i in enumerate(data.ids)}
    kept = [i for i in ids if i in position]
    runfolder.write_gallery(out, kept, data.images[[position[i] for i in kept]])
