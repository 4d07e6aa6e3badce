"""Tracking: a tiny study logged to MLflow (a temporary local store) and TensorBoard, read back with their own APIs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import medclf
from medclf.config import config_fingerprint, parse_config
from medclf.experiments.tracking import default_mlflow_uri, fold_finals, summary_means
from tiny_data import tiny_study


def _study(tiny_splits: Path, cache: Path, **tracking: object) -> dict:
    return tiny_study(tiny_splits, cache, name="tracked", training={"epochs": 1}, tracking=tracking)


def _history(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def tracked(tiny_splits: Path, tmp_path_factory) -> tuple[Path, Path, dict]:
    """A 2-fold, 1-epoch study run with MLflow (the default store, in a temporary working directory) and
    TensorBoard on, without a report; then the same call again, all folds complete, with the report (its
    figures built, not drawn: these tests look at which files are logged, not at their pixels)."""
    from figure_stub import skip_drawing

    root = tmp_path_factory.mktemp("tracked")
    config = _study(tiny_splits, root / "cache", tensorboard=True, mlflow=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # the suite runs offline
        skip_drawing(patch)
        patch.chdir(root)
        summary = medclf.run_study(config, root / "run", report=False)
        store = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"  # the same store, named by tracking.mlflow_uri
        again = config | {"tracking": {"mlflow": True, "tensorboard": True, "mlflow_uri": store}}
        medclf.run_study(again, root / "run", report=True)
    return root, root / "run", summary


def _runs(root: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return client, runs


def test_mlflow_holds_the_study_as_a_parent_run_with_a_nested_run_per_fold(tracked):
    root, run, summary = tracked
    client, runs = _runs(root)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and len(runs) == 6  # the first call and the resumed one, 2 folds each
    first, second = parents
    params = first.data.params
    assert params["training.epochs"] == "1" and params["model.name"] == "test_resnet"
    assert params["cv.n_folds"] == "2" and params["tracking.mlflow"] == "True"
    assert first.data.tags["medclf.run_dir"] == str(run.absolute())
    assert first.data.tags["medclf.config_fingerprint"] == summary["config_fingerprint"]
    assert first.data.tags["medclf.version"] == medclf.__version__
    assert first.info.status == "FINISHED" and first.info.run_name == "tracked"
    for name, value in summary_means(summary).items():
        assert first.data.metrics[name] == pytest.approx(value, nan_ok=True), name
    assert first.data.metrics["test/accuracy"] == pytest.approx(summary["metrics"]["test"]["accuracy"]["mean"])
    assert first.data.metrics["ensemble_test/auc_macro"] == pytest.approx(summary["ensemble"]["test"]["auc_macro"])

    for parent in parents:
        folds = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                       key=lambda r: r.info.run_name)
        assert [r.info.run_name for r in folds] == ["fold-0", "fold-1"]
        for k, fold in enumerate(folds):
            history = _history(run / f"fold-{k}" / "history.csv")
            for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
                logged = client.get_metric_history(fold.info.run_id, key)
                assert [m.step for m in logged] == [row["epoch"] for row in history], key
                assert [m.value for m in logged] == pytest.approx([row[key] for row in history]), key
            metrics = json.loads((run / f"fold-{k}" / "metrics.json").read_text())
            assert fold.data.metrics["test/auc_macro"] == pytest.approx(metrics["metrics"]["test"]["auc_macro"])
            assert fold.data.metrics["val/accuracy"] == pytest.approx(metrics["metrics"]["val"]["accuracy"])
            assert fold.data.metrics["best_epoch"] == metrics["best_epoch"]
            assert fold.info.status == "FINISHED"
            assert fold.data.tags.get("medclf.resumed") == (None if parent is first else "true")


def test_mlflow_keeps_summary_and_report_as_artifacts(tracked):
    root, run, _ = tracked
    client, runs = _runs(root)
    first, second = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [a.path for a in client.list_artifacts(first.info.run_id)] == ["summary.json"]  # report=False
    assert {a.path for a in client.list_artifacts(second.info.run_id)} == {"figures", "report.html", "summary.json",
                                                                          "tables"}
    figures = {Path(a.path).name for a in client.list_artifacts(second.info.run_id, "figures")}
    assert figures == {p.name for p in (run / "figures").iterdir()} and figures
    local = Path(client.download_artifacts(second.info.run_id, "summary.json", str(root / "download")))
    assert json.loads(local.read_text()) == json.loads((run / "summary.json").read_text())
    report = Path(client.download_artifacts(second.info.run_id, "report.html", str(root / "download")))
    assert report.read_bytes() == (run / "report.html").read_bytes()
    assert (root / "mlruns" / "mlflow.db").is_file()  # the default store: mlruns/ of the working directory


def test_tensorboard_events_hold_each_folds_history_and_the_summary(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run, summary = tracked
    for k in (0, 1):
        events = list((run / "tensorboard" / f"fold-{k}").glob("events.out.tfevents.*"))
        assert len(events) == 1  # the resumed call left the finished fold's curves as they were
        accumulator = EventAccumulator(str(run / "tensorboard" / f"fold-{k}"))
        accumulator.Reload()
        history = _history(run / f"fold-{k}" / "history.csv")
        assert "epoch" not in accumulator.Tags()["scalars"]
        for key in ("train_loss", "val_loss", "val_auc_macro", "lr"):
            logged = accumulator.Scalars(key)
            assert [e.step for e in logged] == [row["epoch"] for row in history], key
            assert [e.value for e in logged] == pytest.approx([row[key] for row in history], rel=1e-6), key
    accumulator = EventAccumulator(str(run / "tensorboard" / "summary"))
    accumulator.Reload()
    assert accumulator.Scalars("test/accuracy")[0].value == pytest.approx(summary["metrics"]["test"]["accuracy"]["mean"])


def test_tracking_keys_leave_the_config_fingerprint_as_it_was():
    plain = parse_config({"data": {"source": {"type": "synthetic"}}})
    tracked = parse_config({"data": {"source": {"type": "synthetic"}},
                            "tracking": {"mlflow": True, "tensorboard": True, "experiment": "x",
                                         "mlflow_uri": "sqlite:///x.db"}})
    assert config_fingerprint(plain) == config_fingerprint(tracked)
    assert "tracking" not in json.dumps(plain.model_dump(mode="json", exclude={"tracking"}))


def test_default_mlflow_store_is_sqlite_in_mlruns(tmp_path: Path):
    uri, artifacts = default_mlflow_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert artifacts == (tmp_path / "mlruns" / "artifacts").as_uri() and (tmp_path / "mlruns").is_dir()


def test_fold_finals_and_summary_means_flatten_nested_levels():
    metrics = {"fold": 0, "best_epoch": 3, "metrics": {"test": {"accuracy": 0.5, "patient": {"accuracy": 0.75},
                                                               "per_class": [1, 2]}}}
    assert fold_finals(metrics) == {"test/accuracy": 0.5, "test/patient/accuracy": 0.75, "best_epoch": 3.0}
    summary = {"metrics": {"val": {"auc_macro": {"mean": 0.8, "std": 0.1}, "patient": {"f1_macro": {"mean": 0.6}}}},
               "ensemble": {"test": {"auc_macro": 0.9}}}
    assert summary_means(summary) == {"val/auc_macro": 0.8, "val/patient/f1_macro": 0.6,
                                      "ensemble_test/auc_macro": 0.9}


def test_importing_medclf_loads_neither_mlflow_nor_tensorboard():
    code = ("import sys, medclf, medclf.api, medclf.experiments; medclf.run_study; "
            "print(sorted(m for m in ('mlflow', 'tensorboard', 'torch.utils.tensorboard') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_missing_tracking_package_is_a_config_error_before_any_data_is_read(monkeypatch):
    from medclf.config import TrackingConfig
    from medclf.errors import ConfigError
    from medclf.experiments.tracking import MLflowTracker

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="tracking.mlflow: true needs MLflow .*pip install mlflow-skinny"):
        MLflowTracker(TrackingConfig(mlflow=True), name="x")
