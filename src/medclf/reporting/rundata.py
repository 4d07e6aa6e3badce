"""Read a run folder (``docs/outputs.md``) into memory for the report; nothing here writes or trains.

Optional files (``audit.json``, ``skipped.csv``, ``ensemble/``, patient and multi-label keys) may be absent;
so may keys that later versions added (``stopped_epoch``, the ``step`` column), in runs written before them.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medclf.errors import RunFolderError

__all__ = ["FoldRun", "Predictions", "RunData", "read_history", "read_predictions", "read_run"]

_REQUIRED = ("config.yaml", "data.json", "summary.json")


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


@dataclass
class FoldRun:
    """One complete fold: its ``metrics.json``, ``history.csv`` rows and predictions per split."""

    index: int
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    predictions: dict[str, Predictions]
    patient_predictions: dict[str, Predictions] = field(default_factory=dict)

    @property
    def stopped_epoch(self) -> int | None:
        return self.metrics.get("stopped_epoch")


@dataclass
class RunData:
    """Everything the report shows, read from one run folder."""

    path: Path
    config_text: str
    config: dict[str, Any]
    data: dict[str, Any]
    summary: dict[str, Any]
    folds: list[FoldRun]
    ensemble: Predictions | None = None
    audit: dict[str, Any] | None = None
    skipped: list[dict[str, str]] | None = None
    run_info: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.data["classes"])

    @property
    def multilabel(self) -> bool:
        return self.summary.get("task") == "multilabel"

    @property
    def splits(self) -> list[str]:
        """Scored splits in the summary, in run order (val, holdout, test)."""
        return list(self.summary.get("metrics", {}))

    def pooled(self, split: str) -> Predictions:
        """The predictions of ``split`` from every fold, concatenated (holdout: every pool image once)."""
        return Predictions.concat([f.predictions[split] for f in self.folds if split in f.predictions])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunFolderError(f"{path} is not valid JSON ({error}); was the run folder edited by hand?") from None


def read_history(path: Path) -> list[dict[str, float]]:
    """``history.csv`` rows as floats (an empty cell is NaN; the ``stage`` column stays text)."""
    if not path.exists():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows.append({k: _float(v) if k != "stage" else v for k, v in row.items()})
    return rows


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_predictions(path: Path, classes: list[str]) -> dict[str, Predictions]:
    """``predictions.csv`` (or ``patient_predictions.csv``, keyed by ``patient_id``) split by ``split``."""
    if not path.exists():
        return {}
    columns = [f"prob_{c}" for c in classes]
    grouped: dict[str, dict[str, list]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            g = grouped.setdefault(row.get("split", "test"), {"ids": [], "labels": [], "probs": [], "pred": []})
            g["ids"].append(row.get("id") or row.get("patient_id") or "")
            g["labels"].append(row["label"])
            g["probs"].append([_float(row.get(c)) for c in columns])
            g["pred"].append(row["predicted"])
    return {
        split: Predictions(g["ids"], g["labels"], np.array(g["probs"], dtype=np.float64).reshape(-1, len(classes)),
                           g["pred"])
        for split, g in grouped.items()
    }


def _complete_folds(run_dir: Path) -> list[tuple[int, Path]]:
    """``(k, fold-<k>)`` of every fold with a ``metrics.json``, by fold number."""
    found = []
    for folder in run_dir.glob("fold-*"):
        suffix = folder.name[len("fold-"):]
        if suffix.isdigit() and (folder / "metrics.json").exists():
            found.append((int(suffix), folder))
    return sorted(found)


def read_run(run_dir: Path) -> RunData:
    """Read a finished run folder.

    Raises:
        RunFolderError: ``run_dir`` is not a finished run folder (no ``summary.json`` or no complete fold).
    """
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} does not exist or is not a folder; give a run folder written by medclf run.")
    missing = [name for name in _REQUIRED if not (run_dir / name).exists()]
    if missing:
        raise RunFolderError(
            f"{run_dir} is not a finished run folder: {', '.join(missing)} missing. Run (or resume) the study with "
            "medclf run first."
        )
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    data = _read_json(run_dir / "data.json")
    classes = list(data["classes"])
    folds = [
        FoldRun(
            index=index,
            metrics=_read_json(folder / "metrics.json"),
            history=read_history(folder / "history.csv"),
            predictions=read_predictions(folder / "predictions.csv", classes),
            patient_predictions=read_predictions(folder / "patient_predictions.csv", classes),
        )
        for index, folder in _complete_folds(run_dir)
    ]
    if not folds:
        raise RunFolderError(f"{run_dir} has no complete fold (no fold-<k>/metrics.json); resume it with medclf run.")
    ensemble = read_predictions(run_dir / "ensemble" / "predictions.csv", classes).get("test")
    skipped = None
    if (run_dir / "skipped.csv").exists():
        with open(run_dir / "skipped.csv", newline="", encoding="utf-8") as handle:
            skipped = list(csv.DictReader(handle))
    return RunData(
        path=run_dir,
        config_text=config_text,
        config=yaml.safe_load(config_text) or {},
        data=data,
        summary=_read_json(run_dir / "summary.json"),
        folds=folds,
        ensemble=ensemble,
        audit=_read_json(run_dir / "audit.json") if (run_dir / "audit.json").exists() else None,
        skipped=skipped,
        run_info=_read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {},
    )
