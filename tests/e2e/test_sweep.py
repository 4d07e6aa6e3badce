"""The real ``medclf sweep`` on tiny data: local (sequential and --parallel), Ray, resume after kill -9, search.

The sequential sweep is run once per module (``sequential``); a test that reruns or damages it works on a copy.
The Ray tests share one local Ray (``local_ray``): a RayExecutor uses a Ray already running in its process rather
than starting one, so the start-up (seconds) is paid once. Sweeps whose point is not a separate process (nothing
killed) run in-process through CliRunner; their folds still run in worker processes where the executor says so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from medclf.cli import app
from tiny_data import tiny_study

HEADLINE = ["accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro", "loss"]


def _write_sweep_file(tiny_config: Path, folder: Path) -> Path:
    """2 variants x 2 folds x 1 epoch on 16 px images: the tiny study of conftest.py plus a sweep section."""
    cfg = yaml.safe_load(tiny_config.read_text())
    cfg["training"]["epochs"] = 1
    cfg["sweep"] = {"variants": {"adamw": {}, "sgd": {"training.optimizer.name": "sgd", "training.optimizer.lr": 0.01}},
                    "baseline": "adamw"}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture()
def sweep_file(tiny_config: Path, tmp_path: Path) -> Path:
    return _write_sweep_file(tiny_config, tmp_path)


@pytest.fixture(scope="module")
def sequential(tiny_splits: Path, tmp_path_factory) -> tuple[Path, Result]:
    """The sweep of ``sweep_file`` run once, sequentially, by the CLI in-process: (its folder, CliRunner's result).

    Read it, never write into it: a test that reruns or damages the sweep works on ``_copy_sweep``. Its config
    differs from ``sweep_file``'s only in ``data.cache_dir``, which is not part of a variant's fingerprint.
    """
    root = tmp_path_factory.mktemp("sequential")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_study(tiny_splits, root / "cache")))
    out = root / "sweep"
    start = time.perf_counter()
    done = in_process("sweep", str(_write_sweep_file(config, root)), "--out", str(out))
    print(f"local sweep wall time {time.perf_counter() - start:.1f} s")
    assert done.exit_code == 0, done.output
    return out, done


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for this module's Ray tests, started once and shut down after the module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def in_process(*args: str):
    """``medclf <args>`` through CliRunner, torch on one thread as in the sweep's workers and the killed sweep's
    process (OMP_NUM_THREADS=1): folds trained here are compared with folds trained there to 1e-6."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        torch.set_num_threads(threads)


def _copy_sweep(sweep: Path, target: Path) -> Path:
    shutil.copytree(sweep, target, ignore=shutil.ignore_patterns(".medclf.lock"))
    return target


def _comparable(comparison: dict) -> dict:
    """comparison.json without the timings, which differ between runs."""
    out = json.loads(json.dumps(comparison))
    for v in out["variants"]:
        v.pop("train_time_s")
    return out


def _check_sweep_folder(out: Path) -> dict:
    comparison = json.loads((out / "comparison.json").read_text())
    assert {k for k in comparison} == {"metric", "split", "baseline", "n_folds", "alpha", "variants"}
    assert comparison["metric"] == "auc_macro" and comparison["split"] == "holdout" and comparison["n_folds"] == 2
    names = [v["name"] for v in comparison["variants"]]
    assert sorted(names) == ["adamw", "sgd"] and [v["rank"] for v in comparison["variants"]] == [1, 2]
    means = [v["metrics"]["auc_macro"]["mean"] for v in comparison["variants"]]
    assert means == sorted(means, reverse=True)
    index = json.loads((out / "sweep.json").read_text())
    for v in comparison["variants"]:
        assert set(v) == {"name", "overrides", "run_dir", "rank", "n_folds", "train_time_s", "parameters", "metrics",
                          "vs_baseline"}
        assert set(v["metrics"]) == set(HEADLINE)
        assert set(v["metrics"]["auc_macro"]) == {"mean", "std", "ci_low", "ci_high", "folds"}
        run_dir = out / v["run_dir"]
        assert (run_dir / "summary.json").exists() and (run_dir / "fold-1" / "history.csv").exists()
        folds = [json.loads((run_dir / f"fold-{k}" / "metrics.json").read_text()) for k in (0, 1)]
        assert v["metrics"]["auc_macro"]["folds"] == [f["metrics"]["holdout"]["auc_macro"] for f in folds]
        assert {"name": v["name"], "run_dir": v["run_dir"]}.items() <= next(
            x for x in index["variants"] if x["name"] == v["name"]).items()
        if v["name"] == "adamw":
            assert v["vs_baseline"] is None
        else:
            assert set(v["vs_baseline"]) == {"diff_mean", "t_stat", "p_corrected_t", "p_wilcoxon", "verdict"}
            assert 0 <= v["vs_baseline"]["p_corrected_t"] <= 1 and "adamw" in v["vs_baseline"]["verdict"]
    # the two variants ran on the same folds: their splits.json are identical
    splits = {(out / v["run_dir"] / "splits.json").read_text() for v in comparison["variants"]}
    assert len(splits) == 1
    rows = (out / "comparison.csv").read_text().splitlines()
    assert rows[0].startswith("rank,name,overrides,run_dir") and len(rows) == 3
    md = (out / "comparison.md").read_text()
    assert "| 1 | `" in md and "p (corrected t)" in md
    return comparison


def test_local_sweep_end_to_end_then_rerun_skips_everything(sequential, sweep_file: Path, tmp_path: Path):
    swept, done = sequential
    first = _check_sweep_folder(swept)
    assert (swept / "comparison.html").exists() and "report" in done.stdout

    out = _copy_sweep(swept, tmp_path / "sweep")
    # in-process: nothing is trained, so no second interpreter is needed to see that
    again = CliRunner().invoke(app, ["sweep", str(sweep_file), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert again.stdout.count("2/2 folds already complete, skipped") == 2 and "done (" not in again.stdout
    assert _comparable(json.loads((out / "comparison.json").read_text())) == _comparable(first)


def _close(a: dict, b: dict) -> bool:
    """Same variants in the same order with the same fold values (floating-point noise aside)."""
    assert [v["name"] for v in a["variants"]] == [v["name"] for v in b["variants"]]
    for va, vb in zip(a["variants"], b["variants"]):
        assert va["name"] == vb["name"]
        for m in HEADLINE:
            assert va["metrics"][m]["folds"] == pytest.approx(vb["metrics"][m]["folds"], abs=1e-6)
    return True


def test_a_sweep_killed_mid_run_resumes_to_the_same_comparison(sequential, sweep_file: Path, tmp_path: Path, cli):
    # killed as soon as its first fold is complete: the three folds left take seconds, the poll 0.02 s
    out = tmp_path / "killed"
    command = cli.start("sweep", sweep_file, "--out", out)  # its own process (on one thread), to be killed
    deadline = time.monotonic() + 300
    # a fold is finished once its complete.json (written last) exists
    while not list(out.glob("runs/*/fold-*/complete.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(command.pid, signal.SIGKILL)
    assert command.wait().returncode != 0
    finished = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/fold-*/complete.json")}
    assert 1 <= len(finished) < 4 and not (out / "comparison.json").exists()

    resumed = in_process("sweep", str(sweep_file), "--out", str(out))  # the kill needed a process, the resume not
    assert resumed.exit_code == 0, resumed.output
    assert "already complete, skipped" in resumed.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # finished folds were not rerun
    assert len(list(out.glob("runs/*/fold-*/complete.json"))) == 4
    a = _comparable(json.loads((out / "comparison.json").read_text()))
    b = _comparable(json.loads((sequential[0] / "comparison.json").read_text()))  # the uninterrupted sweep
    assert _close(a, b) and [v["name"] for v in a["variants"]] == [v["name"] for v in b["variants"]]


def test_a_deleted_fold_is_the_only_one_rerun(sequential, sweep_file: Path, tmp_path: Path):
    out = _copy_sweep(sequential[0], tmp_path / "sweep")
    first = json.loads((out / "comparison.json").read_text())
    run_dir = out / first["variants"][1]["run_dir"]
    (run_dir / "fold-1" / "metrics.json").unlink()  # as if the sweep died while fold 1 ran
    again = in_process("sweep", str(sweep_file), "--out", str(out))
    assert again.exit_code == 0, again.output
    assert again.stdout.count(" done (") == 1 and f"{first['variants'][1]['name']}: fold 1 done" in again.stdout
    assert _close(_comparable(json.loads((out / "comparison.json").read_text())), _comparable(first))


def test_random_search_never_scores_test_during_trials_then_scores_the_best(tiny_splits: Path, tmp_path: Path):
    cfg = tiny_study(tiny_splits, tmp_path / "cache", name="search", training={"epochs": 1}) | {
        "sweep": {"search": "random", "trials": 2, "seed": 1,
                  "space": {"training.optimizer.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                            "training.batch_size": [8, 16]}},
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "search"
    done = in_process("sweep", str(path), "--out", str(out))
    assert done.exit_code == 0, done.output
    comparison = json.loads((out / "comparison.json").read_text())
    assert sorted(v["name"] for v in comparison["variants"]) == ["base", "trial-000", "trial-001"]
    assert comparison["baseline"] == "base"
    for v in comparison["variants"]:
        for k in (0, 1):
            fold = json.loads((out / v["run_dir"] / f"fold-{k}" / "metrics.json").read_text())
            assert "test" not in fold["metrics"] and fold["n_images"]["test"] == 0
    best = json.loads((out / "best.json").read_text())
    chosen = max(comparison["variants"], key=lambda v: v["metrics"]["auc_macro"]["mean"])
    assert best["trial"] == chosen["name"] and best["overrides"] == chosen["overrides"]
    assert best["selected_on"] == {"metric": "auc_macro", "split": "holdout",
                                   "mean": pytest.approx(chosen["metrics"]["auc_macro"]["mean"])}
    assert set(best["test"]) >= set(HEADLINE) and best["ensemble_test"] is not None
    assert json.loads((out / "sweep.json").read_text())["best"]["run_dir"] == best["run_dir"]

    # a rerun replays the finished trials into the sampler from sweep.json and trains nothing (so in-process)
    again = CliRunner().invoke(app, ["sweep", str(path), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "resumed: 2 finished trials replayed into the random sampler" in again.stdout and " done (" not in again.stdout
    assert json.loads((out / "best.json").read_text())["trial"] == best["trial"]


def test_sweep_errors_are_one_paragraph(sweep_file: Path, tmp_path: Path):
    cfg = yaml.safe_load(sweep_file.read_text())
    cfg["sweep"]["variants"]["sgd"]["training.optimiser.name"] = "sgd"
    sweep_file.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()  # in-process: both are refused before anything is trained
    done = runner.invoke(app, ["sweep", str(sweep_file), "--out", str(tmp_path / "x")])
    assert done.exit_code == 2 and "variant 'sgd'" in done.stderr and "optimiser" in done.stderr
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "sweep"}))
    done = runner.invoke(app, ["sweep", str(plain)])
    assert done.exit_code == 2 and "has no sweep: section" in done.stderr


# the Ray tests come last: the module's local Ray then runs only while they do
def test_parallel_and_ray_sweeps_give_the_sequential_comparison(sequential, sweep_file: Path, tmp_path: Path,
                                                                 local_ray):
    # in-process: the folds run in spawned workers (--parallel) or Ray workers (the module's local Ray)
    parallel = in_process("sweep", str(sweep_file), "--out", str(tmp_path / "par"), "--parallel", "2")
    assert parallel.exit_code == 0, parallel.output
    assert parallel.stdout.count(" done (") == 4
    start = time.perf_counter()
    ray = in_process("sweep", str(sweep_file), "--out", str(tmp_path / "ray"), "--executor", "ray", "--parallel", "2")
    print(f"ray sweep wall time {time.perf_counter() - start:.1f} s")
    assert ray.exit_code == 0, ray.output
    assert ray.stdout.count(" done (") == 4
    reference = _check_sweep_folder(sequential[0])
    for other in ("par", "ray"):
        assert _close(_check_sweep_folder(tmp_path / other), reference)


def test_a_studys_folds_as_ray_tasks_give_the_sequential_run_folder(sequential, sweep_file: Path, tmp_path: Path,
                                                                     local_ray):
    """`medclf run --executor ray`: the baseline variant's study, its folds on the module's Ray, has the sweep's files
    and fold metrics (the sweep ran that study sequentially on one thread; each task gets one CPU, one thread)."""
    from medclf.experiments.executors import available_cores

    config = yaml.safe_load(sweep_file.read_text())
    del config["sweep"]
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(config))
    out = tmp_path / "study"
    done = in_process("run", str(study), "--out", str(out), "--executor", "ray", "--parallel", str(available_cores()),
                      "--quiet")
    assert done.exit_code == 0, done.output
    assert "fold 0: best epoch" in done.stdout and "fold 1: best epoch" in done.stdout
    swept = sequential[0] / next(v["run_dir"] for v in json.loads((sequential[0] / "sweep.json").read_text())[
        "variants"] if v["name"] == "adamw")
    for k in (0, 1):
        ray_fold, sequential_fold = (run / f"fold-{k}" for run in (out, swept))
        assert sorted(p.name for p in ray_fold.iterdir()) == sorted(p.name for p in sequential_fold.iterdir())
        metrics = [json.loads((fold / "metrics.json").read_text()) for fold in (ray_fold, sequential_fold)]
        for m in metrics:
            m.pop("timing")
        assert metrics[0] == metrics[1]
    assert (out / "summary.json").exists() and (out / "report.html").exists()


def test_a_ray_worker_lost_mid_task_gets_its_task_retried(sequential, sweep_file: Path, tmp_path: Path,
                                                          monkeypatch, local_ray):
    """Every task's first worker dies (os._exit, as a killed node would); Ray retries it and the sweep completes."""
    import medclf.experiments.sweep as sweep_module
    from medclf.experiments import load_sweep, run_sweep
    from medclf.experiments.executors import RayExecutor, execute_fold_task

    markers = tmp_path / "killed"
    markers.mkdir()

    def dies_once(task, num_threads=None):  # a closure: Ray ships it by value to the workers
        import os as _os

        marker = markers / f"{task.variant}-{task.fold.index}"
        if not marker.exists():
            marker.touch()
            _os._exit(1)
        return execute_fold_task(task, num_threads)

    monkeypatch.setattr(sweep_module, "make_executor", lambda kind, *, ray, **kw: RayExecutor(
        ray, num_cpus=2, task_fn=dies_once))
    comparison = run_sweep(load_sweep(sweep_file), tmp_path / "sweep", executor="ray")
    assert len(list(markers.iterdir())) == 4  # 2 variants x 2 folds: each task's first worker was lost
    assert all(len(v["metrics"]["accuracy"]["folds"]) == 2 for v in comparison["variants"])
    assert _close(_check_sweep_folder(tmp_path / "sweep"), _check_sweep_folder(sequential[0]))
