"""One study's folds on an executor: worker processes give the sequential run folder, resume, and the callbacks.

The Ray run of a study is tested in tests/e2e/test_sweep.py, on that module's local Ray (one start-up).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medclf import runfolder
from medclf.cli import app
from medclf.config import load_config
from medclf.experiments import executors, parse_checked_config, run_study
from medclf.experiments.executors import FoldTask, LocalExecutor, execute_fold_task
from study_hooks import Recorder
from tiny_data import tiny_study


def _metrics(run: Path, fold: int) -> dict:
    """A fold's metrics.json without its timings, which differ between runs."""
    metrics = json.loads((run / f"fold-{fold}" / "metrics.json").read_text())
    metrics.pop("timing")
    return metrics


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and p.name != ".medclf.lock")


def test_folds_in_worker_processes_give_the_sequential_run_folder_and_reach_the_callbacks(tiny_splits: Path,
                                                                                           tmp_path: Path):
    # one thread in this process and one per worker (cores 2 / parallel 2): the same thread budget
    config = parse_checked_config(tiny_study(tiny_splits, tmp_path / "cache", training={"epochs": 1,
                                                                                        "num_threads": 1}))
    run_study(config, tmp_path / "sequential")  # the fit runs on training.num_threads, then restores the count
    hooks = Recorder()
    run_study(config, tmp_path / "parallel", callbacks=[hooks], executor=LocalExecutor(parallel=2, cores=2))

    for k in (0, 1):
        assert _metrics(tmp_path / "parallel", k) == _metrics(tmp_path / "sequential", k)
        weights = [(tmp_path / run / f"fold-{k}" / runfolder.WEIGHTS).read_bytes()
                   for run in ("sequential", "parallel")]
        assert weights[0] == weights[1]
    assert _files(tmp_path / "parallel") == _files(tmp_path / "sequential")
    # each worker's fold reaches the callbacks from the driver once it has ended, its epoch from history.csv
    assert hooks.calls[0][0] == "study_start" and hooks.calls[-1][0] == "study_end"
    by_fold = sorted(hooks.calls[1:-1], key=lambda call: call[1])  # the folds end in either order
    assert [c[:3] if c[0] == "epoch_end" else c[:2] for c in by_fold] == [
        ("fold_start", 0), ("epoch_end", 0, 1), ("fold_end", 0),
        ("fold_start", 1), ("epoch_end", 1, 1), ("fold_end", 1),
    ]
    logs = by_fold[1][3]
    assert logs["epoch"] == 1 and isinstance(logs["epoch"], int) and logs["train_loss"] > 0
    assert by_fold[2][2] == json.loads((tmp_path / "parallel" / "fold-0" / "metrics.json").read_text())


class OneProcess:
    """An executor that records its tasks and runs each through the workers' entry point, in this process."""

    def __init__(self) -> None:
        self.tasks: list[FoldTask] = []

    def run(self, tasks, *, run_inline, log, on_done) -> None:
        for task in tasks:
            self.tasks.append(task)
            on_done(task, execute_fold_task(task))


def test_a_run_killed_mid_fold_hands_only_the_unfinished_fold_to_the_executor(trained_run: Path, copy_run,
                                                                              monkeypatch, caplog):
    run = copy_run(trained_run)
    (run / "fold-1" / "complete.json").unlink()  # killed while fold 1 trained: its record is written last
    finished = {p: p.stat().st_mtime_ns for p in (run / "fold-0").iterdir()}
    monkeypatch.setattr(executors, "_DATA_MEMO", {})  # the data the "worker" loads stays with this test
    executor, hooks = OneProcess(), Recorder()
    with caplog.at_level("INFO", logger="medclf"):
        summary = run_study(load_config(run / "config.yaml"), run, callbacks=[hooks], executor=executor)
    assert [t.fold.index for t in executor.tasks] == [1] and executor.tasks[0].run_dir.is_absolute()
    assert "fold 0: already complete, skipped" in caplog.messages
    assert {p: p.stat().st_mtime_ns for p in (run / "fold-0").iterdir()} == finished  # not trained again
    assert (run / "fold-1" / "complete.json").exists() and len(summary["best_epochs"]) == 2
    kinds = [c[0] if c[0] != "epoch_end" else f"epoch_end {c[1]}/{c[2]}" for c in hooks.calls]
    assert kinds == ["study_start", "fold_end", "fold_start", "epoch_end 1/1", "epoch_end 1/2", "fold_end",
                     "study_end"]


@pytest.mark.parametrize("options, message", [
    (["--gpus-per-fold", "1"], "--gpus-per-fold is what each fold's Ray task asks Ray for; give it with --executor"),
    (["--address", "head:6379"], "--address joins a Ray cluster; give it with --executor ray."),
    (["--executor", "dask"], "--executor must be local or ray, got 'dask'."),
    (["--parallel", "0"], "--parallel must be at least 1, got 0."),
])
def test_run_refuses_executor_options_that_do_not_go_together(options: list[str], message: str, tmp_path: Path):
    done = CliRunner().invoke(app, ["run", str(tmp_path / "missing.yaml"), *options])  # refused before the config
    assert done.exit_code == 2 and "Traceback" not in done.output
    assert message in " ".join(done.stderr.split())
