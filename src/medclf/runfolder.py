"""The run folder (``docs/outputs.md``): its paths, the completion rule, the prediction columns, readers and writers.

Every other module reads and writes a run folder through this one. It sits beside :mod:`medclf.atomic` so that
experiments, reporting, inference and evaluation can all use it without importing upward; torch and
safetensors are imported inside the functions that need them.

A fold is complete when its ``fold-<k>/complete.json`` exists, parses, and every file it lists is there with
the recorded size and SHA-256. The record is written last, after the fold's other files, so a killed fold,
a truncated or altered file and a deleted one all read as "not complete", with the reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shutil
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medclf.atomic import atomic_write_bytes, atomic_write_csv, atomic_write_json, atomic_write_text
from medclf.errors import ModelError, RunFolderError

__all__ = [
    "operating_thresholds",
    "COMPLETE", "ENSEMBLE", "GALLERY", "GALLERY_SIZE", "FoldState", "GalleryChoice", "Predictions", "bad_rows",
    "check_fold", "check_probabilities", "check_record", "choose_gallery", "clear_fold", "complete_folds",
    "describe_damage", "ensemble_mean", "fold_dir", "fold_indices", "load_weights", "predict_output_columns",
    "prediction_columns", "prob_column", "prob_columns", "read_gallery", "read_gallery_overlays", "read_json",
    "read_predictions",
    "record_complete", "save_weights", "write_gallery", "write_csv", "write_json", "write_predictions", "write_text",
]

COMPLETE = "complete.json"  # a folder's record of completion, written last
CONFIG = "config.yaml"
RUN = "run.json"
DATA = "data.json"
SPLITS = "splits.json"
SUMMARY = "summary.json"
FOLDS_CSV = "folds.csv"
AUDIT = "audit.json"
SKIPPED = "skipped.csv"
HISTORY = "history.csv"
METRICS = "metrics.json"
WEIGHTS = "model.safetensors"
SPEC = "model.json"
PREDICTIONS = "predictions.csv"
ENSEMBLE = "ensemble"
GALLERY = "gallery.npz"  # the images of the report's gallery of confidently wrong predictions
GALLERY_SIZE = 18  # images in that gallery
SUM_TOLERANCE = 1e-4  # a single-label row's probabilities sum to 1 within this (float32 softmax: ~1e-6)
_HASH_CHUNK = 1 << 20

write_json = atomic_write_json  # every JSON of a run folder: indented, NaN as null, atomic
write_csv = atomic_write_csv  # every CSV of a run folder: a header, floats at full precision, NaN empty, atomic
write_text = atomic_write_text


# ------------------------------------------------------------------------------------------------ paths
def fold_dir(out: Path, index: int) -> Path:
    """``out/fold-<index>``."""
    return Path(out) / f"fold-{index}"


def fold_indices(run_dir: Path) -> list[int]:
    """The numbers of the ``fold-<k>`` folders present in ``run_dir``, ascending."""
    found = [p.name[len("fold-"):] for p in Path(run_dir).glob("fold-*") if p.is_dir()]
    return sorted(int(s) for s in found if s.isdigit())


# ------------------------------------------------------------------------------------ prediction columns
def prob_column(name: str) -> str:
    return f"prob_{name}"


def prob_columns(class_names: Sequence[str]) -> list[str]:
    return [prob_column(c) for c in class_names]


def prediction_columns(class_names: Sequence[str]) -> list[str]:
    """Columns of ``fold-<k>/predictions.csv`` and ``ensemble/predictions.csv``."""
    return ["split", "id", "label", *prob_columns(class_names), "predicted"]


def predict_output_columns(class_names: Sequence[str]) -> list[str]:
    """Columns of the CSV ``medclf predict`` writes."""
    return ["path", *prob_columns(class_names), "predicted"]


# ----------------------------------------------------------------------------------------------- JSON
def read_json(path: Path, *, fix: str = "rerun the command that wrote it") -> Any:
    """Parse a JSON file of a run folder.

    Args:
        path: the file.
        fix: what the user can do about a missing or unreadable file, ending the message.

    Raises:
        RunFolderError: the file is missing, unreadable or not valid JSON (truncated by a full disk, edited...).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing; {fix}.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path} cannot be read ({error}); {fix}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise RunFolderError(f"{path} is not valid JSON ({error}; {len(text.encode())} bytes): it was truncated or "
                             f"altered; {fix}.") from None


def read_history(path: Path) -> list[dict[str, float]]:
    """``history.csv`` rows as floats (an empty cell is NaN; the ``stage`` column stays text)."""
    if not path.exists():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows.append({k: _history_float(v) if k != "stage" else v for k, v in row.items()})
    return rows


def _history_float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


# -------------------------------------------------------------------------------------- completion record
def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def record_complete(folder: Path, **facts: Any) -> None:
    """Write ``folder/complete.json`` listing every file of ``folder`` with its size and SHA-256; call it last.

    ``facts`` (the config and data fingerprints, the number of folds...) are stored beside the file list.
    """
    folder = Path(folder)
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": _digest(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != COMPLETE and not p.name.startswith(".")  # "." marks atomic temporaries
    }
    atomic_write_json(folder / COMPLETE, facts | {"files": files})


@dataclass(frozen=True)
class FoldState:
    """What :func:`check_fold` found.

    Attributes:
        index: the fold number.
        complete: every recorded file is there, whole and unchanged.
        reason: why not, naming the file (None when complete, or when the fold was never started).
        started: the fold's folder exists (so an incomplete fold was begun, or damaged).
        record: the parsed ``complete.json`` (empty when missing or unreadable).
    """

    index: int
    complete: bool
    reason: str | None = None
    started: bool = False
    record: dict[str, Any] | None = None


def check_record(folder: Path, expect: dict[str, Any] | None = None) -> tuple[str | None, dict[str, Any]]:
    """Verify ``folder/complete.json`` against the files; (None, record) when complete, else (reason, record).

    ``expect`` maps record keys (``config_fingerprint``...) to the values they must have.
    """
    folder = Path(folder)
    record_path = folder / COMPLETE
    if not record_path.exists():
        if (folder / METRICS).exists():
            return (f"{record_path} is missing although {folder / METRICS} exists (the fold was killed before it "
                    "finished, or written by a medclf without completion records)"), {}
        return f"{folder} is unfinished (no {COMPLETE})", {}
    try:
        record = read_json(record_path)
        files = record["files"]
        if not isinstance(files, dict) or not files:
            raise TypeError
    except (RunFolderError, KeyError, TypeError):
        return f"{record_path} is unreadable (truncated or altered)", {}
    for key, value in (expect or {}).items():
        if record.get(key) != value:
            return f"{record_path} records {key} {record.get(key)!r}, this run's is {value!r}", record
    for name, entry in files.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return f"{path} is missing", record
        except OSError as error:
            return f"{path} cannot be read ({error})", record
        try:
            expected_size, expected_hash = int(entry["bytes"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError):
            return f"{record_path} is unreadable (its entry for {name} is malformed)", record
        if size != expected_size:
            return f"{path} is {size:,} bytes, {COMPLETE} records {expected_size:,} (truncated or altered)", record
        try:
            if _digest(path) != expected_hash:
                return f"{path} was altered (its SHA-256 differs from the one in {COMPLETE})", record
        except OSError as error:
            return f"{path} cannot be read ({error})", record
    return None, record


def check_fold(run_dir: Path, index: int, expect: dict[str, Any] | None = None) -> FoldState:
    """The completion state of fold ``index`` of ``run_dir`` (see the module docstring for the rule)."""
    folder = fold_dir(run_dir, index)
    if not folder.is_dir():
        return FoldState(index, complete=False)
    reason, record = check_record(folder, expect)
    return FoldState(index, complete=reason is None, reason=reason, started=True, record=record)


def complete_folds(
    run_dir: Path, indices: Iterable[int], *, expect: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> list[int]:
    """The folds among ``indices`` that are complete; a started fold that is not gets a one-line warning."""
    done = []
    for k in indices:
        state = check_fold(run_dir, k, expect)
        if state.complete:
            done.append(k)
        elif _claimed(fold_dir(run_dir, k)):  # finished once, now damaged; a fold killed mid-training is quiet
            log(f"warning: fold {k} is not complete: {state.reason}; it will be trained again")
    return done


def _claimed(folder: Path) -> bool:
    return (folder / COMPLETE).exists() or (folder / METRICS).exists()


def clear_fold(run_dir: Path, index: int) -> None:
    """Remove fold ``index``'s folder (the stale files of an unfinished or damaged fold) before it is retrained."""
    shutil.rmtree(fold_dir(run_dir, index), ignore_errors=True)


# -------------------------------------------------------------------------------------------- weights
def save_weights(path: Path, state_dict: dict[str, Any]) -> None:
    """Save weights as safetensors, atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(path, save(tensors))


def load_weights(path: Path, *, fix: str) -> dict[str, Any]:
    """Load a ``model.safetensors``; never unpickles.

    Raises:
        RunFolderError: the file is missing or is not a readable safetensors file (naming it, ending with ``fix``).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing; {fix}.") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise RunFolderError(f"{path} does not load as safetensors weights ({error}); {fix}.") from None


# ---------------------------------------------------------------------------------------- predictions
@dataclass
class Predictions:
    """The rows of a ``predictions.csv`` of one split.

    Attributes:
        ids: image ids.
        labels: true labels as written (a class name; ``a|b`` for multi-label).
        probs: (N, K) probabilities in ``classes`` order.
        predicted: predicted labels as written.
    """

    ids: list[str]
    labels: list[str]
    probs: np.ndarray
    predicted: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def truth(self, classes: list[str], *, multilabel: bool) -> np.ndarray:
        """(N, K) 0/1 indicator of the true classes (one per row unless multi-label)."""
        return _indicator(self.labels, classes, multilabel=multilabel)

    def decisions(self, classes: list[str], *, multilabel: bool) -> np.ndarray:
        """(N, K) 0/1 indicator of the predicted classes."""
        return _indicator(self.predicted, classes, multilabel=multilabel)

    def y_index(self, classes: list[str]) -> np.ndarray:
        """(N,) true class indices (single-label)."""
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[label] for label in self.labels], dtype=np.int64)

    @staticmethod
    def concat(parts: list[Predictions]) -> Predictions:
        k = parts[0].probs.shape[1] if parts else 0
        return Predictions(
            ids=[i for p in parts for i in p.ids],
            labels=[v for p in parts for v in p.labels],
            probs=np.concatenate([p.probs for p in parts]) if parts else np.zeros((0, k)),
            predicted=[v for p in parts for v in p.predicted],
        )


def _indicator(values: list[str], classes: list[str], *, multilabel: bool) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(values), len(classes)), dtype=np.int64)
    for row, value in enumerate(values):
        names = [v for v in value.split("|") if v] if multilabel else [value]
        for name in names:
            if name in index:
                out[row, index[name]] = 1
    return out


def _cell(text: str | None, path: Path, line: int, column: str) -> float:
    if text in (None, ""):
        return math.nan  # NaN is written as an empty cell; a short (truncated) row gives None
    try:
        return float(text)
    except ValueError:
        raise RunFolderError(f"{path} line {line}: {column} is {text!r}, not a number; the file was altered. "
                             "Rerun medclf run on the run folder to rewrite it.") from None


def read_predictions(path: Path, classes: Sequence[str]) -> dict[str, Predictions]:
    """``predictions.csv`` (or ``<level>_predictions.csv``, keyed by its id column), split by ``split``.

    A missing file gives ``{}``. Empty cells are NaN (callers that need finite rows check them).

    Raises:
        RunFolderError: a ``prob_<class>`` column is missing or a cell is not a number (naming file and line).
    """
    path = Path(path)
    if not path.exists():
        return {}
    columns = prob_columns(classes)
    grouped: dict[str, dict[str, list]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        absent = [c for c in (*columns, "label", "predicted") if c not in (reader.fieldnames or [])]
        if absent:
            raise RunFolderError(f"{path} lacks the columns {', '.join(absent)} (classes: {', '.join(classes)}); "
                                 "it was altered or belongs to another run.")
        for row in reader:
            g = grouped.setdefault(row.get("split") or "test", {"ids": [], "labels": [], "probs": [], "pred": []})
            g["ids"].append(row.get("id") or row.get("patient_id") or row.get("study_id") or "")
            g["labels"].append(row["label"] or "")
            g["probs"].append([_cell(row.get(c), path, reader.line_num, c) for c in columns])
            g["pred"].append(row["predicted"] or "")
    return {
        split: Predictions(g["ids"], g["labels"], np.array(g["probs"], dtype=np.float64).reshape(-1, len(columns)),
                           g["pred"])
        for split, g in grouped.items()
    }


def write_predictions(path: Path, rows: list[dict[str, Any]], class_names: Sequence[str]) -> None:
    """Write ``predictions.csv`` rows (``split``, ``id``, ``label``, ``prob_<class>``..., ``predicted``)."""
    atomic_write_csv(path, rows, prediction_columns(class_names))


def bad_rows(probs: np.ndarray, *, multilabel: bool) -> np.ndarray:
    """Indices of rows that are not probabilities: non-finite, outside [0, 1], or (single-label) not summing to 1."""
    probs = np.asarray(probs, dtype=np.float64)
    bad = ~np.isfinite(probs).all(axis=1)
    with np.errstate(invalid="ignore"):
        bad |= ((probs < 0) | (probs > 1)).any(axis=1)
        if not multilabel:
            bad |= np.abs(probs.sum(axis=1) - 1) > SUM_TOLERANCE
    return np.flatnonzero(bad)


def check_probabilities(probs: np.ndarray, *, where: str, fix: str) -> None:
    """Refuse model outputs that are not finite (a diverged or damaged model).

    Raises:
        ModelError: naming ``where`` (the fold and file), how many rows, and ``fix``.
    """
    rows = np.flatnonzero(~np.isfinite(np.asarray(probs, dtype=np.float64)).all(axis=1)) if len(probs) else []
    if len(rows):
        raise ModelError(f"{where}: the model gives non-finite probabilities (NaN or infinity) for {len(rows)} of "
                         f"{len(probs)} images (first: row {int(rows[0])}); {fix}.")


def ensemble_mean(
    parts: list[tuple[int, Path, Predictions]], *, multilabel: bool
) -> tuple[list[str], list[str], np.ndarray]:
    """Each image's mean probabilities over the folds that predicted it: (ids, labels, (N, K) probabilities).

    ``parts`` are ``(fold, file, predictions)``; ids keep their first appearance's order. A fold that lacks an
    image (one the audit dropped from that fold) does not dilute the others' mean.

    Raises:
        RunFolderError: a row's probabilities are not finite, outside [0, 1] or (single-label) do not sum to 1,
            or two folds give one image different labels; naming the fold, file and image id.
    """
    total: dict[str, np.ndarray] = {}
    count: dict[str, int] = {}
    truth: dict[str, tuple[str, int]] = {}
    for fold, path, preds in parts:
        for row in bad_rows(preds.probs, multilabel=multilabel):
            values = ", ".join(f"{v:.6g}" for v in preds.probs[row])
            rule = "finite and in [0, 1]" if multilabel else "finite, in [0, 1] and sum to 1"
            raise RunFolderError(
                f"fold {fold} ({path}): the probabilities of image {preds.ids[row]!r} are [{values}]; they must be "
                f"{rule}. The file was truncated or altered: rerun medclf run on the run folder to retrain the fold.")
        for image, label, p in zip(preds.ids, preds.labels, preds.probs):
            if image in truth and truth[image][0] != label:
                raise RunFolderError(
                    f"fold {fold} ({path}) labels image {image!r} {label!r}, fold {truth[image][1]} labels it "
                    f"{truth[image][0]!r}; one of the files was altered: rerun medclf run on the run folder.")
            truth.setdefault(image, (label, fold))
            total[image] = total.get(image, 0) + p
            count[image] = count.get(image, 0) + 1
    ids = list(total)
    probs = np.stack([total[i] / count[i] for i in ids]) if ids else np.zeros((0, 0))
    return ids, [truth[i][0] for i in ids], probs


def describe_damage(run_dir: Path, states: list[FoldState], command: str) -> str:
    """One sentence per incomplete fold and what to do, for errors of commands that read a run folder."""
    lines = [f"fold {s.index}: {s.reason or 'missing'}" for s in states]
    return (f"{run_dir} has folds that are not complete ({'; '.join(lines)}). {command} does not use such a run, "
            f"since its results would silently change; run `medclf run {Path(run_dir) / 'config.yaml'} --out "
            f"{run_dir}` to retrain those folds (complete ones are kept)")


# ------------------------------------------------------------------------------------------------ gallery
@dataclass(frozen=True)
class GalleryChoice:
    """The most confidently wrong predictions of a run, as the report's gallery shows them.

    Attributes:
        label: which predictions they are (``test images, fold ensemble``...).
        predictions: those predictions.
        worst: ``(row, score)`` of the wrong ones, most confident first; the score is the probability of the
            prediction (multi-label: the largest error of a label).
    """

    label: str
    predictions: Predictions
    worst: list[tuple[int, float]]


def _gallery_source(
    ensemble: Predictions | None, folds: Sequence[tuple[int, dict[str, Predictions]]]
) -> tuple[str, Predictions] | None:
    """The ensemble's test predictions, else the first fold's test ones, else every fold's holdout (val) pooled."""
    if ensemble is not None and len(ensemble):
        return "test images, fold ensemble", ensemble
    for index, predictions in folds:
        if len(predictions.get("test", ())):
            return f"test images, fold {index}", predictions["test"]
    for split in ("holdout", "val"):
        pooled = Predictions.concat([p[split] for _, p in folds if split in p])
        if len(pooled):
            return f"{split} images (no test split), all folds pooled", pooled
    return None


def _confidently_wrong(preds: Predictions, classes: list[str], *, multilabel: bool, n: int) -> list[tuple[int, float]]:
    """Rows of the most confidently wrong predictions with their confidence, most confident first."""
    if multilabel:
        truth = preds.truth(classes, multilabel=True)
        wrong = (truth != preds.decisions(classes, multilabel=True)).any(axis=1)
        score = np.abs(preds.probs - truth).max(axis=1)
    else:
        wrong = np.array([t != p for t, p in zip(preds.labels, preds.predicted)], dtype=bool)
        score = preds.probs.max(axis=1)
    order = [int(i) for i in np.argsort(-score, kind="stable") if wrong[i]]
    return [(i, float(score[i])) for i in order[:n]]


def choose_gallery(
    classes: Sequence[str], *, multilabel: bool, ensemble: Predictions | None,
    folds: Sequence[tuple[int, dict[str, Predictions]]], n: int = GALLERY_SIZE,
) -> GalleryChoice | None:
    """The gallery of a run: the ``n`` most confidently wrong of its ensemble (else fold, else pooled) predictions.

    ``medclf run`` keeps these images in :data:`GALLERY`; ``medclf report`` shows them. None: no predictions.

    Args:
        classes: the run's classes (labels).
        multilabel: the run is multi-label.
        ensemble: ``ensemble/predictions.csv``'s test rows, or None.
        folds: ``(k, fold-<k>/predictions.csv by split)`` of every fold, in fold order.
        n: images at most.
    """
    source = _gallery_source(ensemble, folds)
    if source is None:
        return None
    label, preds = source
    return GalleryChoice(label, preds, _confidently_wrong(preds, list(classes), multilabel=multilabel, n=n))


def write_gallery(run_dir: Path, ids: Sequence[str], images: np.ndarray, overlays: np.ndarray | None = None) -> None:
    """Write :data:`GALLERY`: the uint8 ``images`` (N, C, H, W) of ``ids``, byte-identical for the same input.

    The file is an ``.npz`` (``ids``: strings, ``images``: uint8, and ``overlays``: uint8 (N, H, W, 3) RGB
    Grad-CAM overlays when given) whose zip entries carry a fixed date, so the same run writes the same bytes.
    """
    buffer = io.BytesIO()
    arrays = {"ids": np.asarray(list(ids), dtype=str), "images": np.ascontiguousarray(images, dtype=np.uint8)}
    if overlays is not None:
        arrays["overlays"] = np.ascontiguousarray(overlays, dtype=np.uint8)
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            entry = io.BytesIO()
            np.lib.format.write_array(entry, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entry.getvalue())
    atomic_write_bytes(Path(run_dir) / GALLERY, buffer.getvalue())


def _gallery_arrays(run_dir: Path, name: str, *, optional: bool = False) -> dict[str, np.ndarray]:
    """Array ``name`` of :data:`GALLERY` by image id (``optional``: empty when the file was kept without it)."""
    path = Path(run_dir) / GALLERY
    if not path.exists():
        raise RunFolderError(f"{path} is missing")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if optional and name not in archive.files:  # overlays: kept before medclf explained the gallery
                return {}
            ids, arrays = archive["ids"], archive[name]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise RunFolderError(f"{path} cannot be read ({error})") from None
    return {str(i): array for i, array in zip(ids.tolist(), arrays)}


def read_gallery(run_dir: Path) -> dict[str, np.ndarray]:
    """The images of :data:`GALLERY` by id: uint8 (C, H, W) each.

    Raises:
        RunFolderError: the file is missing or unreadable (naming it).
    """
    return _gallery_arrays(run_dir, "images")


def read_gallery_overlays(run_dir: Path) -> dict[str, np.ndarray]:
    """The Grad-CAM overlays of :data:`GALLERY` by id: uint8 (H, W, 3) each; empty for a file kept without them.

    Raises:
        RunFolderError: the file is missing or unreadable (naming it).
    """
    return _gallery_arrays(run_dir, "overlays", optional=True)


# ------------------------------------------------------------------------------------------- operating points
def operating_thresholds(run_dir: Path) -> dict[str, dict[str, float]]:
    """The run's decision thresholds, ``{class: {point: threshold}}`` (points such as ``0.5``, ``youden``,
    ``sensitivity_0.90``), from ``summary.json``'s ``operating_points``: each the mean over folds of the
    threshold chosen on that fold's validation split. A run written before operating points existed has none: {}.
    """
    summary = read_json(Path(run_dir) / SUMMARY)
    points = (summary.get("operating_points") or {}).get("thresholds") or []
    out: dict[str, dict[str, float]] = {}
    for p in points:
        out.setdefault(str(p["class"]), {})[str(p["point"])] = float(p["threshold"])
    return out
