"""Run one study: load the data, make the folds, fit and evaluate each fold, summarise, ensemble.

Files are the interface: every fold writes its own folder and the summary is rebuilt from those files, so
a study interrupted after fold 2 resumes at fold 3 and ends with the same summary.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclf import __version__, runfolder
from medclf.config import Config, CVConfig, config_fingerprint, dump_config
from medclf.data import ImageSet, load_dataset, preprocessing_from_config
from medclf.data.classes import positive_class
from medclf.data.rows import Rows
from medclf.data.splitting import Fold, make_folds, resplit_data, resplit_moves, select_folds
from medclf.errors import RunFolderError
from medclf.evaluation.multilabel import cooccurrence, multilabel_metrics
from medclf.experiments.auto_recipe import resolve_recipe
from medclf.experiments.baseline import fold_baseline, fold_model
from medclf.experiments.callbacks import EpochRelay, Log, StudyCallback, log_to
from medclf.experiments.executors import Executor, FoldTask, LocalExecutor, RayExecutor
from medclf.experiments.scoring import (
    copies_warning,
    fold_spread,
    run_audit,
    score_split,
    unit_prediction_columns,
    write_skipped,
)
from medclf.experiments.summary import EVAL_SPLITS, write_summary
from medclf.experiments.validation import check_config
from medclf.models import count_parameters
from medclf.runfolder import fold_dir, read_json, save_weights
from medclf.training import Callback, FitResult, HistoryCSV, RichProgress, Trainer, predict_proba
from medclf.training.device import torch_threads
from medclf.training.distributed import world
from medclf.training.feature_cache import cached_probe_features

__all__ = ["EVAL_SPLITS", "PreparedStudy", "fit_fold", "prepare_study", "run_fold", "run_study", "summarize_study"]

_RESULT_FILES = (runfolder.DATA, runfolder.SPLITS, runfolder.SUMMARY, runfolder.FOLDS_CSV, runfolder.AUDIT,
                 runfolder.SKIPPED, runfolder.GALLERY)
_RUN_FILES = (runfolder.CONFIG, runfolder.RUN, *_RESULT_FILES)

_log = log_to(logging.getLogger(__name__))  # the default `log`: status lines as log records
_RERUN = "run the same command again: the fold is then trained again"


def run_study(
    config: Config,
    out: Path,
    *,
    overwrite: bool = False,
    progress: Any = None,
    log: Log = _log,
    callbacks: Sequence[StudyCallback] = (),
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Run (or resume) the cross-validated study ``config`` into the run folder ``out``.

    Args:
        config: the validated configuration.
        out: the run folder; created when missing.
        overwrite: replace a run of a different config instead of refusing.
        progress: a ``rich.progress.Progress`` to draw fold, epoch and batch bars on, or None.
        log: receives one-line status messages (default: the ``medclf.experiments.study`` logger; those that
            start with ``warning:`` at WARNING level, the others at INFO).
        callbacks: study callbacks, called in this order (:class:`~medclf.experiments.callbacks.StudyCallback`
            documents the hooks). Tracking is not added here: :func:`medclf.run_study` adds it.
        executor: runs the folds that are not complete
            (:func:`~medclf.experiments.executors.study_executor`); None: in this process, one after the other.
            A fold run in a worker process or on Ray draws only the fold bar, and reaches the callbacks when it
            has ended: ``on_fold_start``, its epochs replayed from its ``history.csv``, ``on_fold_end``.

    Returns:
        The summary written to ``out/summary.json``.

    Raises:
        ConfigError: a name in ``config`` is not registered (:func:`~medclf.experiments.validation.check_config`).
        RunFolderError: ``out`` holds a different study and ``overwrite`` is False.
    """
    # a Ray cluster's workers train (and check training.device there); the driver may have no GPU
    check_config(config, check_device=not (isinstance(executor, RayExecutor) and executor.address))
    if world()[1] > 1:  # started by torchrun: each fold data-parallel, rank 0 writes
        from medclf.experiments import distributed  # late: that module imports this one
        if not isinstance(executor, distributed.RankExecutor):  # (rank 0 comes back here with one)
            return distributed.run_distributed_study(config, Path(out), overwrite=overwrite, progress=progress,
                                                     log=log, callbacks=callbacks, executor=executor)
    out = Path(out)
    study = prepare_study(config, out, overwrite=overwrite, log=log)
    for callback in callbacks:
        callback.on_study_start(config, out)
    done = runfolder.complete_folds(out, study.indices, expect=fold_facts(config, study.data), log=log)
    folds = _StudyFolds(config, study, out, done=done, progress=progress, log=log, callbacks=callbacks)
    (executor or LocalExecutor()).run(folds.tasks(), run_inline=folds.run_inline, log=log, on_done=folds.ended)
    summary = summarize_study(config, study, out, folds.results())
    for callback in callbacks:
        callback.on_study_end(summary)
    return summary


class _StudyFolds:
    """The folds of :func:`run_study` as its executor runs them: tasks, and each fold's hooks, lines and bar.

    Folds are reported in index order where they run here (a complete fold is read back just before the next
    fold to run, as it always was), and as they end where they run in workers.
    """

    def __init__(self, config: Config, study: PreparedStudy, out: Path, *, done: list[int], progress: Any,
                 log: Log, callbacks: Sequence[StudyCallback]) -> None:
        self.config, self.study, self.out, self.log, self.callbacks = config, study, out, log, callbacks
        self.progress = progress
        self.bar = progress.add_task("folds", total=len(study.folds)) if progress is not None else None
        self.done = set(done)
        self.skipped = sorted(done)  # complete folds not yet read back
        self.found: dict[int, dict[str, Any]] = {}

    def tasks(self) -> list[FoldTask]:
        """The folds to train: absolute paths, since a Ray worker may run in another working directory."""
        study, run_dir = self.study, self.out.resolve()
        return [FoldTask(self.config.name, self.config, run_dir, fold, study.data.fingerprint,
                         n_folds=study.n_folds, folds_run=tuple(study.indices))
                for fold in study.folds if fold.index not in self.done]

    def run_inline(self, task: FoldTask) -> dict[str, Any]:
        """Train ``task``'s fold here, with the progress bars and the epoch relay."""
        index = task.fold.index
        self._read_back(before=index)
        for callback in self.callbacks:
            callback.on_fold_start(index)
        fit_callbacks: list[Callback] = []
        if self.progress is not None:
            fit_callbacks.append(RichProgress(self.progress, f"fold {index}"))
        if self.callbacks:
            fit_callbacks.append(EpochRelay(self.callbacks, index))
        result = run_fold(self.config, self.study, index, self.out, callbacks=fit_callbacks)
        self.log(_fold_line(result))
        self._end(index, result)
        return result

    def ended(self, task: FoldTask, result: dict[str, Any]) -> None:
        """A fold that a worker trained: its line, and its hooks now (its epochs from its ``history.csv``)."""
        index = task.fold.index
        self._read_back(before=index)
        self.log(_fold_line(result))
        for callback in self.callbacks:
            callback.on_fold_start(index)
        if self.callbacks:
            for row in runfolder.read_history(fold_dir(self.out, index) / runfolder.HISTORY):
                logs = {k: v for k, v in row.items() if v == v}  # an empty cell reads as NaN: a key the row lacks
                logs["epoch"] = int(logs["epoch"])
                for callback in self.callbacks:
                    callback.on_epoch_end(index, logs["epoch"], dict(logs))
        self._end(index, result)

    def results(self) -> list[dict[str, Any]]:
        """Every fold's result, in index order, once the executor has run the rest."""
        self._read_back(before=None)
        return [self.found[index] for index in self.study.indices]

    def _read_back(self, *, before: int | None) -> None:
        """Read back the complete folds below ``before`` (None: all): their line and ``on_fold_end``."""
        while self.skipped and (before is None or self.skipped[0] < before):
            index = self.skipped.pop(0)
            self.log(f"fold {index}: already complete, skipped")
            self._end(index, read_json(fold_dir(self.out, index) / runfolder.METRICS, fix=_RERUN))

    def _end(self, index: int, result: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback.on_fold_end(index, result)
        self.found[index] = result
        if self.bar is not None:
            self.progress.update(self.bar, advance=1)


@dataclass
class PreparedStudy:
    """What every fold of a study shares: the loaded data, its description and the folds."""

    data: ImageSet
    data_info: dict[str, Any]
    folds: list[Fold]  # the folds to run: every fold, or those cv.folds selects
    start: float  # time.perf_counter() when the study started
    data_s: float  # seconds spent loading the data
    n_folds: int = 0  # the folds the study has (cv.folds may run fewer); 0: len(folds)

    def __post_init__(self) -> None:
        self.n_folds = self.n_folds or len(self.folds)

    @property
    def indices(self) -> list[int]:
        """The indices of the folds to run, in order."""
        return [f.index for f in self.folds]


def prepare_study(
    config: Config, out: Path, *, overwrite: bool = False, data: ImageSet | None = None, log: Log = _log
) -> PreparedStudy:
    """Check or create the run folder ``out``, load the data (unless given), make the folds.

    Writes ``config.yaml``, ``run.json``, ``data.json`` and ``splits.json``; the folds are then run with
    :func:`run_fold` (in any order, in any process) and summarised with :func:`summarize_study`.

    Raises:
        RunFolderError: ``out`` holds a different study (or data) and ``overwrite`` is False.
    """
    out = Path(out)
    start = time.perf_counter()
    _prepare_run_folder(out, config, overwrite=overwrite, log=log)
    data = load_dataset(config.data) if data is None else data
    data_s = time.perf_counter() - start
    _check_same_data(out, data, overwrite=overwrite, log=log)
    data_info = _describe_data(data)
    runfolder.write_json(out / runfolder.DATA, data_info)
    if copies := copies_warning(data):  # none for an image that a fold-folder set holds in every fold
        log(copies)
    if data.small_images:
        small = data.small_images_summary(limit=3)
        log(f"warning: {small['count']} images are enlarged more than {small['factor']:g}x to data.image_size "
            f"(e.g. {', '.join(small['first'])}), so they hold less detail than the model's input; see data.json")
    write_skipped(data, out, log)
    given = data
    data = resplit_data(data, config.cv, seed=config.seed)  # before the audit, which then sees the new splits
    all_folds = make_folds(data, config.cv, seed=config.seed)
    folds = select_folds(all_folds, config.cv.folds)  # made in full first: fold k is the whole study's fold k
    folds = run_audit(config, data, folds, out, log)  # audit.json; may refuse the run or drop leaking images
    runfolder.write_json(out / runfolder.SPLITS, _describe_splits(data, folds, given=given, cv=config.cv))
    return PreparedStudy(data=data, data_info=data_info, folds=folds, start=start, data_s=data_s,
                         n_folds=len(all_folds))


def run_fold(
    config: Config,
    study: PreparedStudy,
    index: int,
    out: Path,
    *,
    callbacks: list[Callback] | None = None,
    score_test: bool = True,
    n_folds: int | None = None,
    folds_run: list[int] | None = None,
) -> dict[str, Any]:
    """Fit and evaluate fold ``index`` into ``out/fold-<index>/``; its ``complete.json`` is written last.

    Whatever the fold's folder held (an unfinished or damaged attempt) is removed first.
    ``score_test=False`` leaves the test split unpredicted (a search scores its trials on validation only).
    ``n_folds`` is the study's number of folds (default: ``study.n_folds``) and ``folds_run`` the folds this run
    trains (default: ``study.indices``), both recorded in ``complete.json`` (predict expects those folds).

    Raises:
        ModelError: the trained model gives non-finite probabilities (training diverged).
    """
    fold = next(f for f in study.folds if f.index == index)
    if not score_test:
        fold = dataclasses.replace(fold, test=np.empty(0, dtype=np.int64))
    runfolder.clear_fold(out, index)
    with torch_threads(config.training.num_threads):  # the whole fold, its predictions too, as in a worker
        result = _run_fold(config, study.data, fold, Path(out), callbacks=list(callbacks or []))
    facts = fold_facts(config, study.data) | {"fold": index, "n_folds": n_folds or study.n_folds,
                                              "folds": list(folds_run or study.indices)}
    runfolder.record_complete(fold_dir(out, index), **facts, medclf_version=__version__)
    return result


def fold_facts(config: Config, data: ImageSet) -> dict[str, str]:
    """What a fold's ``complete.json`` must record for the fold to belong to this run: the two fingerprints."""
    return {"config_fingerprint": config_fingerprint(config), "data_fingerprint": data.fingerprint}


def summarize_study(config: Config, study: PreparedStudy, out: Path, results: list[dict]) -> dict[str, Any]:
    """Write ``summary.json`` and ``folds.csv`` from the folds' results (their ``metrics.json``)."""
    timing = {"data_s": study.data_s, "start": study.start}
    return write_summary(Path(out), config, study.data, study.data_info, results, timing=timing,
                      n_folds=study.n_folds)


# ------------------------------------------------------------------------------------------ run folder
def _prepare_run_folder(out: Path, config: Config, *, overwrite: bool, log: Log) -> None:
    fingerprint = config_fingerprint(config)
    run_file = out / runfolder.RUN
    if run_file.exists():
        same_text = _same_config_text(out, config)
        previous = _recorded(out, "run.json", "config_fingerprint", overwrite=overwrite, log=log,
                             unrecorded=fingerprint if same_text else None)
        if previous != fingerprint and not overwrite:
            raise RunFolderError(
                f"{out} holds a run of a different config ({_config_difference(out, config)}). "
                "Give another --out, or --overwrite to replace it."
            )
        if previous != fingerprint:
            _clear_results(out)
    elif out.exists() and any(not p.name.startswith(".") for p in out.iterdir()) and not overwrite:  # .medclf.lock
        raise RunFolderError(
            f"{out} exists, is not empty and is not a medclf run folder. Give another --out, or --overwrite "
            "to write into it anyway."
        )
    out.mkdir(parents=True, exist_ok=True)
    runfolder.write_text(out / runfolder.CONFIG, dump_config(config))
    runfolder.write_json(run_file, {"config_fingerprint": fingerprint, "medclf_version": __version__})


def _same_config_text(out: Path, config: Config) -> bool:
    try:
        return (out / runfolder.CONFIG).read_text(encoding="utf-8") == dump_config(config)
    except (OSError, UnicodeDecodeError):
        return False


def _recorded(out: Path, name: str, key: str, *, overwrite: bool, log: Log, unrecorded: str | None) -> str | None:
    """The fingerprint ``key`` of ``out/name`` (run.json, data.json), re-established when the file is unreadable.

    An unreadable file (truncated by a full disk, say) must not cost the finished folds: their ``complete.json``
    records hold the same fingerprint (``config_fingerprint``, ``data_fingerprint``), so when every record agrees
    that value is used and the file is rewritten. With no record at all, ``unrecorded`` is used (nothing finished
    depends on it); None there, or records that disagree, refuse the folder unless ``overwrite``.
    """
    record_key = "config_fingerprint" if name == "run.json" else "data_fingerprint"
    try:
        found = read_json(out / name)
        if isinstance(found, dict):
            return found.get(key)
        raise RunFolderError(f"{out / name} holds no JSON object: it was altered.")
    except RunFolderError as error:
        values = {r.get(record_key) for r in _fold_records(out)}
        if values:
            value, source = (next(iter(values)) if len(values) == 1 else None), "the folds' complete.json records"
        else:
            value, source = unrecorded, "config.yaml" if name == "run.json" else "the data just loaded"
        if value is not None:
            log(f"warning: {out / name} is unreadable (truncated or altered); its {key} {value} is re-established "
                f"from {source} and the file is rewritten")
            return value
        if overwrite:
            return None
        raise RunFolderError(
            f"{str(error).rstrip('.')}. Neither the folds' complete.json records nor config.yaml establish which "
            f"{'config' if name == 'run.json' else 'data'} the run folder holds, so its finished folds cannot be "
            "matched to this run. Restore the file, give another --out, or --overwrite to start again."
        ) from None


def _fold_records(out: Path) -> list[dict[str, Any]]:
    """The readable ``complete.json`` records of the folds in ``out`` (their files are not verified here)."""
    records = []
    for k in runfolder.fold_indices(out):
        try:
            record = read_json(fold_dir(out, k) / runfolder.COMPLETE)
        except RunFolderError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _config_difference(out: Path, config: Config) -> str:
    import yaml

    try:
        old = _flatten(yaml.safe_load((out / runfolder.CONFIG).read_text()))
    except (OSError, yaml.YAMLError):
        return "its config.yaml is unreadable"
    new = _flatten(config.model_dump(mode="json"))
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:5])
    return f"differs in {shown}" + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flatten(v, f"{prefix}{k}.")
    return out


def _clear_results(out: Path) -> None:
    """Remove every result of a previous run (its config.yaml and run.json are rewritten by the caller)."""
    for name in _RESULT_FILES:
        (out / name).unlink(missing_ok=True)
    for child in out.glob("fold-*"):
        shutil.rmtree(child)
    shutil.rmtree(out / "ensemble", ignore_errors=True)
    shutil.rmtree(out / "tensorboard", ignore_errors=True)  # tracking.tensorboard's curves of the replaced run


def _check_same_data(out: Path, data: ImageSet, *, overwrite: bool, log: Log) -> None:
    path = out / runfolder.DATA
    if path.exists() and _recorded(out, "data.json", "fingerprint", overwrite=overwrite, log=log,
                                   unrecorded=data.fingerprint) != data.fingerprint:
        if not overwrite:
            raise RunFolderError(
                f"The data changed since {out} was started (its fingerprint differs), so completed folds "
                "would not be comparable. Give another --out, or --overwrite to start again."
            )
        _clear_results(out)


def _describe_data(data: ImageSet) -> dict[str, Any]:
    return {
        "n_images": len(data),
        "classes": data.class_names,
        "positive_class": positive_class(data.class_names, multilabel=data.multilabel),
        "counts": data.counts(),
        "image_shape": list(data.images.shape[1:]),
        "n_patients": None if data.groups is None else int(len(np.unique(data.groups))),
        "fingerprint": data.fingerprint,
        "root": data.root,
        "duplicates": {
            "count": sum(len(g) - 1 for g in data.duplicates),
            "groups": data.duplicates,
        },
        "small_images": data.small_images_summary(),
    } | ({"cooccurrence": cooccurrence(data.labels, data.class_names)} if data.multilabel else {})


def _describe_splits(data: ImageSet, folds: list[Fold], *, given: ImageSet, cv: CVConfig) -> dict[str, Any]:
    """splits.json: each fold's image ids per part, and what ``cv.resplit_by_patient`` moved (null when off)."""
    resplit = resplit_moves(given.splits, data.splits, data.groups) if cv.resplit_by_patient else None
    return {
        "folds": [{"fold": f.index} | {k: data.ids[v].tolist() for k, v in f.parts().items()} for f in folds],
        "resplit": resplit,
    }


# ------------------------------------------------------------------------------------------------ a fold
def fit_fold(config: Config, data: ImageSet, fold: Fold, *, callbacks: list[Callback]
             ) -> tuple[torch.nn.Module, Trainer, FitResult]:
    """Build fold ``fold``'s model and fit it: ``(model, trainer, fit)``. Writes only what ``callbacks`` write.

    Every rank of a distributed study (:mod:`medclf.experiments.distributed`) fits through here, so all ranks
    build the same model and trainer and make the same collective calls.
    """
    config = resolve_recipe(config, len(fold.train))  # recipe: auto picks by the fold's size (idempotent)
    model = fold_model(config, data, fold)
    images = Rows(data.images)  # in RAM or memory-mapped; each part below is a view, never a copy of its rows
    labels = torch.from_numpy(data.labels)
    labels = labels.float() if data.multilabel else labels  # multi-hot targets of the BCE loss
    trainer = Trainer(
        model, config.training, class_names=data.class_names, seed=config.seed + fold.index,
        callbacks=callbacks, multilabel=data.multilabel,
        metrics_fn=_multilabel_validation(data, config) if data.multilabel else None,
    )
    if any(stage.kind == "probe" for stage in config.training.stages):  # computed once, read by the other folds
        trainer.probe_features = cached_probe_features(
            model, images, data_fingerprint=data.fingerprint, batch_size=config.training.eval_batch_size,
            runtime=lambda: trainer.runtime, cache_dir=config.data.cache_dir)
    fit = trainer.fit(images.subset(fold.train), labels[fold.train], images.subset(fold.val), labels[fold.val])
    return model, trainer, fit


def _run_fold(config: Config, data: ImageSet, fold: Fold, out: Path, *, callbacks: list[Callback]) -> dict:
    fd = fold_dir(out, fold.index)
    config = resolve_recipe(config, len(fold.train))  # so the baseline and metrics.json see the recipe trained
    model, trainer, fit = fit_fold(config, data, fold, callbacks=[HistoryCSV(fd / runfolder.HISTORY), *callbacks])
    images = Rows(data.images)

    eval_start = time.perf_counter()
    # scored as medclf predict predicts by default (channels-last, measured faster for prediction on every model;
    # fp32, whatever autocast training ran under): the fold's predictions.csv and a later `medclf predict` agree
    scoring = dataclasses.replace(trainer.runtime, channels_last=True, amp_dtype=None)
    scoring.place(model)
    metrics, confusions, rows, unit_rows, thresholds = {}, {}, [], {}, None
    scored: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # split: (idx, probs), for the operating points
    for split in EVAL_SPLITS:
        idx = fold.parts()[split]
        if len(idx) == 0:
            continue
        probs = predict_proba(model, images.subset(idx), batch_size=config.training.eval_batch_size,
                              runtime=scoring, activation=fit.activation, tta=config.evaluation.tta)
        runfolder.check_probabilities(
            probs, where=f"fold {fold.index} ({fd}), {split} split",
            fix="training diverged (see its history.csv): lower training.optimizer.lr and run again; "
                "finished folds are kept")
        metrics[split], matrix, split_rows, split_units, thresholds = score_split(
            data, idx, probs, split=split, evaluation=config.evaluation, thresholds=thresholds
        )
        if matrix is not None:
            confusions[split] = matrix
        rows += split_rows
        scored[split] = (idx, probs)
        for level, level_rows in split_units.items():
            unit_rows.setdefault(level, []).extend(level_rows)

    runfolder.write_predictions(fd / runfolder.PREDICTIONS, rows, data.class_names)
    for level, level_rows in unit_rows.items():
        columns = unit_prediction_columns(level, data.class_names)
        runfolder.write_csv(fd / f"{level}_predictions.csv", level_rows, columns)
    save_weights(fd / runfolder.WEIGHTS, model.state_dict())
    spec = model.spec | {
        "class_names": data.class_names,
        "positive_class": positive_class(data.class_names, multilabel=data.multilabel),
        "activation": fit.activation,
        "tta": list(config.evaluation.tta),  # predict, export and serve average over the same flips
        # two classes: the positive class's decision threshold (evaluation.threshold; null: the likelier class)
        "decision_threshold": None if data.multilabel or thresholds is None else float(thresholds[0]),
        "preprocessing": preprocessing_from_config(config.data).to_dict(),
        "medclf_version": __version__,
    }
    runfolder.write_json(fd / runfolder.SPEC, spec)
    result = {
        "fold": fold.index,
        "recipe": config.training.recipe,  # recipe: auto resolved for this fold
        "best_epoch": fit.best_epoch,
        "epochs_run": len(fit.history),
        "stopped_epoch": fit.stopped_epoch,
        "monitor": config.training.monitor,
        "best_score": fit.best_score,
        "metrics": metrics,
        "confusion": confusions,
        "n_images": {k: int(len(v)) for k, v in fold.parts().items()},
        "timing": {"train_s": fit.train_time_s, "eval_s": time.perf_counter() - eval_start},
        "parameters": _parameters(model, fit.trainable_per_stage),
        "runtime": fit.runtime,
    }
    if thresholds is not None:  # multi-label: each label's; two classes: the positive class's
        named = data.class_names if data.multilabel else data.class_names[1:]
        result["thresholds"] = {c: float(t) for c, t in zip(named, thresholds)}
    result |= fold_spread(data, scored, evaluation=config.evaluation, seed=config.seed, thresholds=thresholds)
    if (baseline := fold_baseline(config, data, fold, trainer.runtime)) is not None:  # evaluation.baseline
        result["baseline"] = baseline
    runfolder.write_json(fd / runfolder.METRICS, result)  # then run_fold records the files in complete.json
    return result


def _parameters(model: torch.nn.Module, trainable_per_stage: list[int]) -> dict[str, Any]:
    """Total parameters, those trained (by the last stage), and the weights' size in MB."""
    counts: dict[str, Any] = count_parameters(model)
    if trainable_per_stage:
        counts["trainable"] = trainable_per_stage[-1]
    if len(trainable_per_stage) > 1:
        counts["trainable_per_stage"] = trainable_per_stage
    return counts


def _multilabel_validation(data: ImageSet, config: Config) -> Callable[[np.ndarray, np.ndarray], dict]:
    """Validation metrics of a multi-label fit, at the fixed threshold (0.5 while tuning: tuning is per fold)."""
    fixed = config.evaluation.threshold
    threshold = 0.5 if fixed == "tuned" else float(fixed)
    return lambda y, p: multilabel_metrics(y, p, class_names=data.class_names, thresholds=threshold)


def _fold_line(result: dict) -> str:
    parts = [f"fold {result['fold']}: best epoch {result['best_epoch']}/{result['epochs_run']}"]
    for split in EVAL_SPLITS:
        if split in result["metrics"]:
            m = result["metrics"][split]
            if "accuracy" in m:
                parts.append(f"{split} acc {m['accuracy']:.3f} auc {m['auc_macro']:.3f}")
            else:
                parts.append(f"{split} f1 {m['f1_macro']:.3f} auc {m['auc_macro']:.3f}")
            if "patient" in m:
                parts.append(f"{split} patient acc {m['patient']['accuracy']:.3f}")
    return ", ".join(parts) + f" ({result['timing']['train_s']:.0f} s)"
