"""The sweep driver's checks before anything trains: paired folds, the compared split, an absolute sweep folder.

The executor is replaced by one that records its tasks and stops the sweep, so no fold is trained.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import medclf.experiments.sweep as sweep_module
from medclf.errors import ConfigError
from medclf.experiments.sweep import run_sweep
from medclf.experiments.sweep_config import load_sweep

BASE = {
    "name": "s",
    "data": {"source": {"type": "synthetic", "n_patients": 24, "slices_per_patient": 2}, "image_size": 32},
    "model": {"name": "test_resnet"},
    "training": {"epochs": 1},
    "cv": {"n_folds": 2, "val_fraction": 0.5},
}


class Stop(Exception):
    """Raised by the recording executor instead of training."""


class RecordingExecutor:
    def __init__(self) -> None:
        self.tasks: list = []

    def run(self, tasks, *, run_inline, log) -> None:
        self.tasks = list(tasks)
        raise Stop


@pytest.fixture()
def executor(monkeypatch) -> RecordingExecutor:
    recorder = RecordingExecutor()
    monkeypatch.setattr(sweep_module, "make_executor", lambda kind, **kw: recorder)
    return recorder


def write(tmp_path: Path, sweep: dict, **base) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**BASE, **base, "sweep": sweep}, sort_keys=False))
    return path


def test_the_sweep_folder_is_absolute_so_ray_workers_write_where_the_driver_reads(
    tmp_path: Path, monkeypatch, executor: RecordingExecutor
):
    plan = load_sweep(write(tmp_path, {"variants": {"a": {}, "b": {"training.epochs": 2}}}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Stop):
        run_sweep(plan, Path("relative"))
    assert len(executor.tasks) == 4  # 2 variants x 2 folds
    assert all(t.run_dir.is_absolute() and t.run_dir.parent == tmp_path / "relative" / "runs" for t in executor.tasks)


def test_a_variant_with_other_folds_is_refused_before_any_fold_runs(tmp_path: Path, executor: RecordingExecutor):
    plan = load_sweep(write(tmp_path, {"baseline": "base", "variants": {
        "base": {},
        "resized": {"data.image_size": 48},  # other pixels, the same images in every fold: still paired
        "more": {"data.source.n_patients": 32},  # other images: other folds
    }}))
    with pytest.raises(ConfigError, match=r"variant 'more' \(fold 0's train part has \d+ images the baseline's "
                                          r"lacks and lacks \d+ of the baseline's\) would run on other folds than "
                                          r"the baseline 'base'\. The paired tests compare") as error:
        run_sweep(plan, tmp_path / "out")
    assert "'resized'" not in str(error.value) and "\n" not in str(error.value)
    assert executor.tasks == []  # nothing was handed to the executor


def test_the_same_folds_pass_the_check(tmp_path: Path, executor: RecordingExecutor):
    plan = load_sweep(write(tmp_path, {"variants": {"base": {}, "resized": {"data.image_size": 48}}}))
    with pytest.raises(Stop):
        run_sweep(plan, tmp_path / "out")
    assert sorted({t.variant for t in executor.tasks}) == ["base", "resized"]


@pytest.mark.parametrize(("split", "cv", "match"), [
    ("holdout", {"mode": "holdout", "val_fraction": 0.5}, r"sweep.split: holdout compares each fold's holdout images, but variant 'a' has "
                                     r"none in fold 0 \(cv.mode: holdout .*compare on val\). sweep.split accepts "
                                     r"holdout, val or test"),
    ("test", {"n_folds": 2, "val_fraction": 0.5}, r"sweep.split: test .* variant 'a' has none in fold 0, 1 \(the data has no test split"),
])
def test_a_compared_split_no_fold_has_is_refused_before_training(
    tmp_path: Path, executor: RecordingExecutor, split: str, cv: dict, match: str
):
    plan = load_sweep(write(tmp_path, {"split": split, "variants": {"a": {}, "b": {"training.epochs": 2}}}, cv=cv))
    with pytest.raises(ConfigError, match=match):
        run_sweep(plan, tmp_path / "out")
    assert executor.tasks == []


def test_val_split_with_holdout_mode_runs(tmp_path: Path, executor: RecordingExecutor):
    plan = load_sweep(write(tmp_path, {"split": "val", "variants": {"a": {}, "b": {"training.epochs": 2}}},
                            cv={"mode": "holdout", "val_fraction": 0.5}))
    with pytest.raises(Stop):
        run_sweep(plan, tmp_path / "out")
    assert len(executor.tasks) == 2


def _finish(store, plan, name: str, overrides: dict, folds: tuple[int, ...] = (0, 1)) -> dict:
    """Mark a trial's folds finished in the store (a verified complete.json is what marks a fold done)."""
    from medclf.experiments.store import run_key, variant_dir
    from medclf.runfolder import fold_dir, record_complete

    trial = plan.make_variant(name, overrides, score_test=False)
    run_dir = variant_dir(store.out, run_key(trial.config, store.load(trial.config).fingerprint, score_test=False))
    for k in folds:
        fold_dir(run_dir, k).mkdir(parents=True)
        (fold_dir(run_dir, k) / "metrics.json").write_text("{}")
        record_complete(fold_dir(run_dir, k))
    return {"name": name, "overrides": overrides, "run_dir": str(run_dir.relative_to(store.out)), "score_test": False}


def test_a_resumed_search_reuses_the_finished_trials_in_order(tmp_path: Path):
    from medclf.experiments.sweep import _finished_trials, _Store

    plan = load_sweep(write(tmp_path, {"search": "random", "trials": 4,
                                       "space": {"training.epochs": [1, 2], "training.batch_size": [8, 16]}}))
    store = _Store(plan, tmp_path / "out", RecordingExecutor(), log=lambda msg: None)
    store.prepare(plan.variants[0])
    first = _finish(store, plan, "trial-000", {"training.epochs": 1, "training.batch_size": 8})
    second = _finish(store, plan, "trial-001", {"training.epochs": 2, "training.batch_size": 8})
    half = _finish(store, plan, "trial-002", {"training.epochs": 2, "training.batch_size": 16}, folds=(0,))
    after = _finish(store, plan, "trial-003", {"training.epochs": 1, "training.batch_size": 16})
    previous = {"search": "random", "variants": [{"name": "base", "overrides": {}}, first, second, half, after]}
    assert [t.name for t in _finished_trials(plan, store, previous)] == ["trial-000", "trial-001"]
    assert _finished_trials(plan, store, previous)[1].overrides == second["overrides"]
    # a trial outside the current space, or a sweep.json of another kind of sweep, is not reused
    outside = first | {"overrides": {"training.epochs": 3, "training.batch_size": 8}}
    assert _finished_trials(plan, store, previous | {"variants": [outside, second]}) == []
    assert _finished_trials(plan, store, previous | {"search": "optuna"}) == []
    assert _finished_trials(plan, store, None) == []
