"""Read a run folder (``docs/outputs.md``) into memory for the report; nothing here writes or trains.

Every file is read through :mod:`medclf.runfolder`, and every fold the summary counts must be complete (its
files verified against its ``complete.json``): a report never shows a fold whose files were truncated or altered.
Optional files (``audit.json``, ``skipped.csv``, ``ensemble/``, patient and multi-label keys) may be absent;
so may keys that later versions added (``stopped_epoch``, the ``step`` column), in runs written before them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medclf import runfolder
from medclf.errors import RunFolderError
from medclf.runfolder import Predictions, read_history, read_predictions

__all__ = ["FoldRun", "Predictions", "RunData", "read_history", "read_predictions", "read_run"]

_REQUIRED = ("config.yaml", "data.json", "summary.json")


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


_FIX = "rerun medclf run with the run's config.yaml into the run folder (finished folds are kept)"


def _read_json(path: Path) -> Any:
    return runfolder.read_json(path, fix=_FIX)


def _complete_folds(run_dir: Path, summary: dict[str, Any]) -> list[tuple[int, Path]]:
    """``(k, fold-<k>)`` of every fold the summary counts, each verified.

    Raises:
        RunFolderError: a fold is missing or not complete, naming it, the file and what to do.
    """
    indices = (summary.get("folds") or {}).get("run")  # cv.folds may have run a subset (older runs: 0 to n - 1)
    if indices is None:
        indices = range(len(summary.get("best_epochs") or []) or len(runfolder.fold_indices(run_dir)))
    states = [runfolder.check_fold(run_dir, k) for k in indices]
    damaged = [s for s in states if not s.complete]
    if damaged:
        raise RunFolderError(runfolder.describe_damage(run_dir, damaged, "medclf report") + ".")
    return [(k, runfolder.fold_dir(run_dir, k)) for k in indices]


def _read_ensemble(run_dir: Path, classes: list[str]) -> Predictions | None:
    """``ensemble/predictions.csv`` (its folder's ``complete.json`` verified), or None when there is none."""
    folder = run_dir / runfolder.ENSEMBLE
    if not (folder / "predictions.csv").exists():
        return None
    reason, _ = runfolder.check_record(folder)
    if reason:
        raise RunFolderError(f"the fold ensemble of {run_dir} is not complete: {reason}. Rerun medclf run with the "
                             "run's config.yaml into the run folder: it rebuilds the ensemble from the folds without "
                             "retraining them.")
    return read_predictions(folder / "predictions.csv", classes).get("test")


def _read_config(run_dir: Path, summary: Any) -> tuple[str, dict[str, Any]]:
    """``config.yaml``'s text and mapping, checked against the fingerprint the run recorded in ``summary.json``.

    The report shows the config and reads settings from it, so a truncated or edited config.yaml must not change
    the report without a word: it is re-validated and its fingerprint compared with the one the run computed.
    """
    import yaml

    from medclf.config import config_fingerprint, parse_config
    from medclf.errors import ConfigError

    path = run_dir / "config.yaml"
    try:
        text = path.read_text(encoding="utf-8")
        config = yaml.safe_load(text)
        fingerprint = config_fingerprint(parse_config(config, base_dir=run_dir, origin=str(path)))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RunFolderError(f"{path} cannot be read as the run's config ({reason}): it was truncated or altered; "
                             f"{_FIX}.") from None
    recorded = summary.get("config_fingerprint") if isinstance(summary, dict) else None
    if recorded is not None and recorded != fingerprint:
        raise RunFolderError(f"{path} is not the config this run was made with (its fingerprint is {fingerprint}, "
                             f"summary.json records {recorded}): it was altered; {_FIX}.")
    return text, config


def read_run(run_dir: Path) -> RunData:
    """Read a finished run folder.

    Raises:
        RunFolderError: ``run_dir`` is not a finished run folder (no ``summary.json`` or no complete fold).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} does not exist or is not a folder; give a run folder written by medclf run.")
    missing = [name for name in _REQUIRED if not (run_dir / name).exists()]
    if missing:
        raise RunFolderError(
            f"{run_dir} is not a finished run folder: {', '.join(missing)} missing. Run (or resume) the study with "
            "medclf run first."
        )
    data = _read_json(run_dir / "data.json")
    summary = _read_json(run_dir / "summary.json")
    config_text, config = _read_config(run_dir, summary)
    for name, value, key in (("data.json", data, "classes"), ("summary.json", summary, "metrics")):
        if not isinstance(value, dict) or key not in value:
            raise RunFolderError(f"{run_dir / name} has no {key!r} entry: it was altered; {_FIX}.")
    classes = list(data["classes"])
    folds = [
        FoldRun(
            index=index,
            metrics=_read_json(folder / "metrics.json"),
            history=read_history(folder / "history.csv"),
            predictions=read_predictions(folder / "predictions.csv", classes),
            patient_predictions=read_predictions(folder / "patient_predictions.csv", classes),
        )
        for index, folder in _complete_folds(run_dir, summary)
    ]
    if not folds:
        raise RunFolderError(f"{run_dir} has no complete fold (no fold-<k>/complete.json); resume it with medclf run.")
    ensemble = _read_ensemble(run_dir, classes)
    skipped = None
    if (run_dir / "skipped.csv").exists():
        with open(run_dir / "skipped.csv", newline="", encoding="utf-8") as handle:
            skipped = list(csv.DictReader(handle))
    return RunData(
        path=run_dir,
        config_text=config_text,
        config=config,
        data=data,
        summary=summary,
        folds=folds,
        ensemble=ensemble,
        audit=_read_json(run_dir / "audit.json") if (run_dir / "audit.json").exists() else None,
        skipped=skipped,
        run_info=_read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {},
    )
