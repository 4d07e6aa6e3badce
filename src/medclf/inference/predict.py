"""Predict new images with a finished run: the mean probabilities of its fold models (or one fold), through torch
or through the run's ONNX export (``engine="onnx"``, :mod:`medclf.inference.export`).

Reads only the run folder's fold folders (``fold-<k>/complete.json``, ``model.json`` and ``model.safetensors``):
each model carries its class names, preprocessing and test-time augmentation, so the images are decoded and
predicted exactly as in evaluation. A fold is used only when its files verify against its ``complete.json``
(:mod:`medclf.runfolder`), and the ensemble only when every fold of the run does, so a damaged or missing fold is
an error naming it, never a quietly smaller ensemble.

When the inputs say whose images they are (a CSV's ``patient_id``/``study_id`` columns, or a DICOM file's
``PatientID``/``StudyInstanceUID`` when the run took ids from headers), the images' probabilities are also
aggregated per patient and per study, with the run's ``evaluation.patient_aggregation``, as the run scored them.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from medclf import runfolder
from medclf.atomic import atomic_write_csv
from medclf.config import load_config
from medclf.data import Preprocessing, decode_image, list_image_files
from medclf.data.csv_rows import read_csv_rows
from medclf.data.formats import dicom_ids, is_dicom
from medclf.errors import ConfigError, ModelError, RunFolderError
from medclf.evaluation.aggregation import aggregate_units
from medclf.evaluation.metrics import decide
from medclf.models import Classifier, model_from_spec
from medclf.training import TTA_FLIPS, predict_proba
from medclf.training.device import PREDICTION_PRECISIONS, inference_runtime

__all__ = ["ENGINES", "PredictionResult", "UnitSettings", "ensemble_proba", "fold_models", "load_fold_models",
           "model_tta", "predict_batch_size", "predict_images", "predict_inputs", "unit_settings"]

ENGINES = ("auto", "torch", "onnx")  # auto: onnx when the run's own export is current, else torch
# Images per forward pass when none is asked for: as many as hold this many pixels, at most 256 (measured fastest
# on this project's CPU, docs/benchmarks.md "Inference speed": 256 at 28 px, 16 at 224 px, where bigger batches
# were slower; memory stays near 16 images of 224 px whatever the size).
PREDICT_PIXELS = 16 * 224 * 224
MAX_PREDICT_BATCH = 256


def predict_batch_size(image_hw: Sequence[int]) -> int:
    """The default images per forward pass for images of ``(height, width)`` (:data:`PREDICT_PIXELS`)."""
    height, width = int(image_hw[0]), int(image_hw[1])
    return max(1, min(MAX_PREDICT_BATCH, PREDICT_PIXELS // max(1, height * width)))


# (level, id column of the output, suffix of its file beside the image-level CSV)
UNIT_LEVELS = (("patient", "patient_id", "_patients.csv"), ("study", "study_id", "_studies.csv"))


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
    expected: set[int] = set()  # the folds the runs trained (cv.folds may select some), else all of the study's
    for s in states:
        record = s.record or {}
        expected |= set(record.get("folds") or range(record.get("n_folds") or 0))
    absent = [runfolder.check_fold(run_dir, k) for k in sorted(expected) if k not in present]
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
    model = model_from_spec(spec, weights, source=folder / "model.json")
    model_tta(spec, source=folder / "model.json")  # a bad entry fails here, naming the file, not mid-prediction
    return model


def decision_threshold(specs: list[dict[str, Any]]) -> float | None:
    """A two-class ensemble's decision threshold on the positive class: the mean of its folds' (``model.json``
    ``decision_threshold``, chosen on each fold's validation split by ``evaluation.threshold``), as the run's
    ensemble was scored; None when a fold has none (the likelier class is predicted)."""
    values = [spec.get("decision_threshold") for spec in specs]
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def model_tta(spec: dict[str, Any], *, source: Path | str = "model.json") -> list[str]:
    """The test-time augmentation ``spec`` records (``tta``; [] for runs written before it existed).

    Raises:
        ModelError: ``tta`` is not a list of known flips.
    """
    tta = spec.get("tta") or []
    if not isinstance(tta, list) or any(name not in TTA_FLIPS for name in tta):
        raise ModelError(f"{source}: 'tta' must be a list of {sorted(TTA_FLIPS)}, got {tta!r}; the file is "
                         "damaged or hand-edited: retrain the run, or restore the file.")
    return list(tta)


def ensemble_proba(
    loaded: list[tuple[int, Classifier]], images: torch.Tensor, *, batch_size: int | None = None,
    run_dir: Path | None = None, device: torch.device | None = None, precision: Literal["fp32", "bf16"] = "fp32",
) -> np.ndarray:
    """The mean class probabilities (N, K) of fold models ``[(fold, model), ...]`` for ``images`` (N, C, H, W) uint8.

    Each model's output activation and test-time augmentation come from its ``model.json``; a model yielding
    non-finite values is an error naming its fold. ``device``: default the GPU when there is one. Each model runs
    as :func:`~medclf.training.device.inference_runtime` says (channels-last where it is faster: the models are
    left in that format), in fp32 unless ``precision`` is ``bf16`` (autocast; probabilities still in fp32).
    ``batch_size`` default: :func:`predict_batch_size` of the images' size.
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch_size = batch_size or predict_batch_size(images.shape[-2:])
    probs: np.ndarray | None = None
    for k, model in loaded:
        runtime = inference_runtime(model, device, precision=precision)
        activation = model.spec.get("activation", "softmax")  # runs before losses other than softmax had none
        fold_probs = predict_proba(runtime.place(model), images, batch_size=batch_size, runtime=runtime,
                                   activation=activation, tta=model_tta(model.spec))
        where = f"fold {k}" + (f" ({runfolder.fold_dir(run_dir, k) / 'model.safetensors'})" if run_dir else "")
        rerun = f"`medclf run {run_dir / 'config.yaml'} --out {run_dir}`" if run_dir else "`medclf run`"
        runfolder.check_probabilities(fold_probs, where=where,
                                      fix=f"its weights are damaged or it diverged; retrain it with {rerun}")
        probs = fold_probs / len(loaded) if probs is None else probs + fold_probs / len(loaded)
    assert probs is not None, "ensemble_proba needs at least one model"
    return probs


# ------------------------------------------------------------------------------------------ patients, studies
@dataclass(frozen=True)
class UnitSettings:
    """How a run groups images: its aggregation method, the CSV columns naming patient and study, DICOM ids."""

    method: str = "mean"
    columns: dict[str, str] = field(default_factory=lambda: {"patient": "patient_id", "study": "study_id"})
    dicom_headers: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"patient_aggregation": self.method, "id_columns": dict(self.columns),
                "dicom_ids": self.dicom_headers}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnitSettings:
        return cls(d.get("patient_aggregation", "mean"), dict(d.get("id_columns") or cls().columns),
                   bool(d.get("dicom_ids", True)))


def unit_settings(run_dir: Path) -> UnitSettings:
    """The run's unit settings from its ``config.yaml`` (a manifest's own id column names); defaults without one."""
    path = Path(run_dir) / runfolder.CONFIG
    if not path.is_file():
        return UnitSettings()
    config = load_config(path)
    source = config.data.source
    return UnitSettings(
        method=config.evaluation.patient_aggregation,
        columns={"patient": getattr(source, "patient_column", "patient_id"),
                 "study": getattr(source, "study_column", "study_id")},
        dicom_headers=config.data.patient_ids == "header",
    )


def _input_units(inputs: Sequence[str | Path], settings: UnitSettings) -> tuple[list[Path], dict[str, list[str]]]:
    """The image files of ``inputs`` and, per level, each image's id ("" where it has none)."""
    paths: list[Path] = []
    ids: dict[str, list[str]] = {level: [] for level, _, _ in UNIT_LEVELS}
    for item in inputs:
        found = list_image_files([item])
        paths += found
        rows = read_csv_rows(Path(item))[1] if Path(item).suffix.lower() == ".csv" else None
        for level, _, _ in UNIT_LEVELS:
            column = settings.columns[level]
            # list_image_files gives a CSV's images row by row, so its rows line up with ``found``
            ids[level] += [row.get(column, "").strip() for _, row in rows] if rows is not None else [""] * len(found)
    if settings.dicom_headers:  # as the run did with data.patient_ids: header
        for i, path in enumerate(paths):
            if is_dicom(path) and not (ids["patient"][i] and ids["study"][i]):
                patient, study = dicom_ids(path)
                ids["patient"][i] = ids["patient"][i] or patient
                ids["study"][i] = ids["study"][i] or study
    return paths, ids


def _unit_rows(units: list[str], paths: list[Path], probs: np.ndarray, class_names: list[str], *,
               id_column: str, method: str, threshold: float | None = None) -> list[dict]:
    """One row per unit: its id, mean (or vote) probabilities, predicted class and image count."""
    # an image without an id is its own unit, as in the run; labels are unknown here, so all zero (unused)
    units = [u or str(p) for u, p in zip(units, paths)]
    ids, _, unit_probs, counts = aggregate_units(np.asarray(units), np.zeros(len(units), dtype=np.int64), probs,
                                                 method=method, threshold=threshold)
    decided = decide(unit_probs, None if method == "vote" else threshold)  # votes were decided per image
    return [
        {id_column: str(u)} | {runfolder.prob_column(c): float(v) for c, v in zip(class_names, p)}
        | {"predicted": class_names[int(d)], "n_images": int(n)}
        for u, p, n, d in zip(ids, unit_probs, counts, decided)
    ]


# ------------------------------------------------------------------------------------------------ predict
@dataclass
class PredictionResult:
    """What :func:`predict_inputs` produced: image rows, unit rows per level, and the files written."""

    rows: list[dict]
    units: dict[str, list[dict]]
    written: list[Path]
    engine: str


def _decode_all(paths: list[Path], prep: Preprocessing) -> torch.Tensor:
    with ThreadPoolExecutor(max_workers=4) as pool:  # PIL decodes outside the GIL
        return torch.from_numpy(np.stack(list(pool.map(lambda p: decode_image(p, prep), paths))))


def predict_inputs(
    run_dir: Path,
    inputs: Sequence[str | Path],
    *,
    fold: int | None = None,
    out: Path | None = None,
    batch_size: int | None = None,
    engine: Literal["auto", "torch", "onnx"] = "auto",
    model: Path | None = None,
    precision: Literal["fp32", "bf16"] = "fp32",
) -> PredictionResult:
    """Class probabilities and the predicted class of each input image, and of each patient and study.

    Args:
        run_dir: a run folder written by ``medclf run``.
        inputs: image files, folders (searched recursively) or CSV files listing paths (a ``path`` column, else the
            first; ``patient_id``/``study_id`` columns, or the run manifest's own, group the images).
        fold: use only this fold's model instead of the ensemble of all folds (torch engine).
        out: the image-level CSV (path, prob_<class>..., predicted); ``<stem>_patients.csv`` and
            ``<stem>_studies.csv`` (id, prob_<class>..., predicted, n_images) beside it when ids exist. Nothing is
            written when None.
        batch_size: images per forward pass; default :func:`predict_batch_size` of the model's input size.
        engine: ``torch`` (the fold models), ``onnx`` (onnxruntime on ``medclf export``'s model), or ``auto``:
            ``onnx`` when ``RUN_DIR/export`` holds an export of the run's current fold weights (its sidecar's
            ``weights_sha256``; 1.5-2.9x faster here), the whole ensemble asked for in fp32, and onnxruntime is
            installed; ``torch`` otherwise.
        model: for ``onnx``, the exported ``model.onnx`` or its folder; default ``RUN_DIR/export``.
        precision: ``fp32``, or ``bf16`` autocast (torch engine; a CUDA device or a CPU with bf16 instructions).

    Raises:
        ConfigError: an unknown engine, ``--fold``/``--model``/``bf16`` given to the engine that does not take
            it, or ``bf16`` on a device without bf16 support.
    """
    run_dir = Path(run_dir)
    if precision not in PREDICTION_PRECISIONS:  # checked before the engine is chosen: auto would hide it
        raise ConfigError(f"--precision must be fp32 or bf16 (bf16: autocast with the torch engine), got "
                          f"{precision!r}.")
    if engine == "auto":
        engine = _auto_engine(run_dir, fold=fold, model=model, precision=precision)
    if engine == "onnx":
        from medclf.inference.export import OnnxModel, default_export_dir  # onnxruntime only when asked for

        if precision != "fp32":
            raise ConfigError(f"precision {precision!r} runs the torch engine's fold models; the ONNX engine runs "
                              "the fp32 graph `medclf export` wrote. Use --engine torch, or fp32.")
        if fold is not None:
            raise ConfigError("--fold chooses a torch fold model; the ONNX engine runs the model `medclf export` "
                              "wrote (export one fold with `medclf export RUN_DIR --fold K`, then pass --model).")
        onnx_model = OnnxModel.load(model or default_export_dir(run_dir))
        class_names, prep, settings = onnx_model.class_names, onnx_model.preprocessing, onnx_model.units
        paths, unit_ids = _input_units(inputs, settings)
        probs = onnx_model.predict(_decode_all(paths, prep).numpy(), batch_size=batch_size)
        threshold = onnx_model.sidecar.get("decision_threshold")
    elif engine == "torch":
        if model is not None:
            raise ConfigError("--model names an exported ONNX model; it needs --engine onnx (the torch engine "
                              "reads the fold models of RUN_DIR).")
        loaded = fold_models(run_dir, fold)
        spec = loaded[0][1].spec
        class_names, prep = list(spec["class_names"]), Preprocessing.from_dict(spec["preprocessing"])
        settings = unit_settings(run_dir)
        paths, unit_ids = _input_units(inputs, settings)
        probs = ensemble_proba(loaded, _decode_all(paths, prep), batch_size=batch_size, run_dir=run_dir,
                               precision=precision)
        threshold = decision_threshold([m.spec for _, m in loaded])
    else:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}.")
    rows = [
        {"path": str(p)} | {runfolder.prob_column(c): float(v) for c, v in zip(class_names, row)}
        | {"predicted": class_names[int(d)]}
        for p, row, d in zip(paths, probs, decide(probs, threshold))
    ]
    units = {
        level: _unit_rows(unit_ids[level], paths, probs, class_names, id_column=column, method=settings.method,
                          threshold=threshold)
        for level, column, _ in UNIT_LEVELS if any(unit_ids[level])
    }
    written = _write_outputs(out, rows, units, class_names) if out is not None else []
    return PredictionResult(rows=rows, units=units, written=written, engine=engine)


def _auto_engine(run_dir: Path, *, fold: int | None, model: Path | None, precision: str) -> str:
    """``onnx`` where it predicts what the torch engine would, faster: a current export of the whole ensemble."""
    if model is not None:
        return "onnx"  # --model names an export: the ONNX engine runs it
    if fold is not None or precision != "fp32":
        return "torch"
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return "torch"
    from medclf.inference.export import current_export

    return "onnx" if current_export(run_dir) is not None else "torch"


def _write_outputs(out: Path, rows: list[dict], units: dict[str, list[dict]], class_names: list[str]) -> list[Path]:
    out = Path(out)
    atomic_write_csv(out, rows, runfolder.predict_output_columns(class_names))
    written = [out]
    for level, column, suffix in UNIT_LEVELS:
        if level in units:
            path = out.with_name(out.stem + suffix)
            atomic_write_csv(path, units[level], [column, *runfolder.prob_columns(class_names), "predicted",
                                                  "n_images"])
            written.append(path)
    return written


def predict_images(
    run_dir: Path,
    inputs: list[str | Path],
    *,
    fold: int | None = None,
    out: Path | None = None,
    batch_size: int | None = None,
) -> list[dict]:
    """Class probabilities and the predicted class for each input image (the torch engine of :func:`predict_inputs`).

    Returns:
        One dict per image, in the CSV's column order.
    """
    return predict_inputs(run_dir, inputs, fold=fold, out=out, batch_size=batch_size, engine="torch").rows
