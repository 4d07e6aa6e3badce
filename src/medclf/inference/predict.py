"""Predict new images with a finished run: the mean probabilities of its fold models (or one fold).

Reads only the run folder's fold folders (``fold-<k>/complete.json``, ``model.json`` and ``model.safetensors``):
each model carries its class names and preprocessing, so the images are decoded exactly as in training. A fold
is used only when its files verify against its ``complete.json`` (:mod:`medclf.runfolder`), and the ensemble only
when every fold of the run does, so a damaged or missing fold is an error naming it, never a quietly smaller
ensemble.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from medclf import runfolder
from medclf.atomic import atomic_write_csv
from medclf.data import Preprocessing, decode_image, list_image_files
from medclf.errors import RunFolderError
from medclf.models import Classifier, model_from_spec
from medclf.training import Runtime, predict_proba

__all__ = ["ensemble_proba", "fold_models", "load_fold_models", "predict_images"]


def _usable_folds(run_dir: Path, fold: int | None) -> list[int]:
    """The folds to predict with, every one verified; raises naming the first problem and its fix."""
    present = runfolder.fold_indices(run_dir)
    if fold is not None:
        state = runfolder.check_fold(run_dir, fold)
        if not state.complete:
            why = state.reason or f"{runfolder.fold_dir(run_dir, fold)} does not exist"
            raise RunFolderError(f"{run_dir} has no complete fold {fold} ({why}); --fold takes a complete fold "
                                 f"(folders present: {', '.join(map(str, present)) or 'none'}), or run `medclf run "
                                 f"{run_dir / 'config.yaml'} --out {run_dir}` to retrain it.")
        return [fold]
    if not present:
        raise RunFolderError(f"{run_dir} holds no trained model (no fold-<k>/ folder). Run a study first.")
    states = [runfolder.check_fold(run_dir, k) for k in present]
    n_folds = max((s.record or {}).get("n_folds") or 0 for s in states)
    absent = [runfolder.check_fold(run_dir, k) for k in range(n_folds) if k not in present]
    damaged = [s for s in states if not s.complete] + absent
    if damaged:
        usable = [s.index for s in states if s.complete]
        hint = f" or pass --fold {usable[0]} to use one complete fold" if usable else ""
        raise RunFolderError(runfolder.describe_damage(run_dir, damaged, "medclf predict") + f"{hint}.")
    origins = {(s.record.get("config_fingerprint"), s.record.get("data_fingerprint")) for s in states if s.record}
    if len(origins) > 1:
        raise RunFolderError(f"the folds of {run_dir} come from different runs (their complete.json records hold "
                             f"{len(origins)} config/data fingerprints); an ensemble of them would mean nothing. "
                             "Predict with --fold K, or retrain the run into a new folder.")
    return present


def load_fold_models(run_dir: Path, *, fold: int | None = None) -> list[Classifier]:
    """The fold models of ``run_dir`` (or only fold ``fold``), in fold order; every fold's files verified.

    Raises:
        RunFolderError: ``run_dir`` is not a run folder, a fold is not complete (missing, truncated or altered
            files, named), or its weights do not load into the model ``model.json`` describes.
    """
    return [model for _, model in fold_models(run_dir, fold)]


def fold_models(run_dir: Path, fold: int | None = None) -> list[tuple[int, Classifier]]:
    """``[(fold, model), ...]`` of ``run_dir`` (every fold, or only ``fold``), each fold's files verified."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"Run folder {run_dir} does not exist.")
    return [(k, _load_fold(run_dir, k)) for k in _usable_folds(run_dir, fold)]


def _load_fold(run_dir: Path, k: int) -> Classifier:
    folder = runfolder.fold_dir(run_dir, k)
    fix = f"retrain fold {k} with `medclf run {run_dir / 'config.yaml'} --out {run_dir}` (complete folds are kept)"
    spec = runfolder.read_json(folder / "model.json", fix=fix)
    weights = runfolder.load_weights(folder / "model.safetensors", fix=fix)
    # model_from_spec names model.json in every error: a spec it cannot build, weights that do not fit it
    return model_from_spec(spec, weights, source=folder / "model.json")


def ensemble_proba(
    loaded: list[tuple[int, Classifier]], images: torch.Tensor, *, batch_size: int = 64, run_dir: Path | None = None
) -> np.ndarray:
    """The mean class probabilities (N, K) of fold models ``[(fold, model), ...]`` for ``images`` (N, C, H, W) uint8.

    Each model's output activation comes from its ``model.json``; a model yielding non-finite values is an error
    naming its fold.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runtime = Runtime(device=device, amp_dtype=None, channels_last=False)
    probs: np.ndarray | None = None
    for k, model in loaded:
        activation = model.spec.get("activation", "softmax")  # runs before losses other than softmax had none
        fold_probs = predict_proba(model.to(device), images, batch_size=batch_size, runtime=runtime,
                                   activation=activation)
        where = f"fold {k}" + (f" ({runfolder.fold_dir(run_dir, k) / 'model.safetensors'})" if run_dir else "")
        rerun = f"`medclf run {run_dir / 'config.yaml'} --out {run_dir}`" if run_dir else "`medclf run`"
        runfolder.check_probabilities(fold_probs, where=where,
                                      fix=f"its weights are damaged or it diverged; retrain it with {rerun}")
        probs = fold_probs / len(loaded) if probs is None else probs + fold_probs / len(loaded)
    assert probs is not None, "ensemble_proba needs at least one model"
    return probs


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
    run_dir = Path(run_dir)
    loaded = fold_models(run_dir, fold)
    spec = loaded[0][1].spec
    class_names = spec["class_names"]
    prep = Preprocessing.from_dict(spec["preprocessing"])
    paths = list_image_files(inputs)
    with ThreadPoolExecutor(max_workers=4) as pool:  # PIL decodes outside the GIL
        images = torch.from_numpy(np.stack(list(pool.map(lambda p: decode_image(p, prep), paths))))
    probs = ensemble_proba(loaded, images, batch_size=batch_size, run_dir=run_dir)
    rows = [
        {"path": str(p)} | {runfolder.prob_column(c): float(v) for c, v in zip(class_names, row)}
        | {"predicted": class_names[int(row.argmax())]}
        for p, row in zip(paths, probs)
    ]
    if out is not None:
        atomic_write_csv(Path(out), rows, runfolder.predict_output_columns(class_names))
    return rows
