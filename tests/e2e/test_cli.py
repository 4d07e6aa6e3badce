"""The real ``medclf`` command on tiny data: the run-folder contract, predict, resume, refusals, errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from medclf import __version__
from medclf.cli import app
from real_data import skip_if_it_reads_absent_real_data

CLASSES = ["blank", "circle", "square"]
HEADLINE = ["accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro", "loss"]
runner = CliRunner()


def medclf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medclf", *args], capture_output=True, text=True, timeout=600)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_then_predict_honours_the_run_folder_contract(trained_run: Path, tiny_splits: Path, tmp_path: Path):
    out = trained_run  # `python -m medclf run` of tiny_config's study (2 epochs), once per session; read only

    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["training"]["epochs"] == 2 and resolved["training"]["optimizer"]["name"] == "adamw"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["medclf_version"] == __version__
    assert set(summary["metrics"]) == {"val", "holdout", "test"}
    for name in HEADLINE + [f"auc/{c}" for c in CLASSES]:
        stats = summary["metrics"]["test"][name]
        assert set(stats) == {"mean", "std", "min", "max", "folds"} and len(stats["folds"]) == 2
    assert set(summary["ensemble"]["test"]) >= set(HEADLINE)
    assert summary["data"]["counts"]["train"] == {c: 10 for c in CLASSES}
    assert {"total_s", "data_s", "fold_train_s"} <= set(summary["timing"])

    rows = _read_csv(out / "folds.csv")
    assert {(r["fold"], r["split"]) for r in rows} == {
        (f, s) for f in ("0", "1") for s in ("val", "holdout", "test")} | {("ensemble", "test")}
    assert set(HEADLINE) <= set(rows[0])

    for k in (0, 1):
        fold = out / f"fold-{k}"
        metrics = json.loads((fold / "metrics.json").read_text())
        assert metrics["fold"] == k and metrics["n_images"]["test"] == 12
        history = _read_csv(fold / "history.csv")
        assert len(history) == 2 and {"train_loss", "val_loss", "val_accuracy"} <= set(history[0])
        preds = _read_csv(fold / "predictions.csv")
        assert list(preds[0]) == ["split", "id", "label", *[f"prob_{c}" for c in CLASSES], "predicted"]
        assert sum(r["split"] == "test" for r in preds) == 12
        assert abs(sum(float(preds[0][f"prob_{c}"]) for c in CLASSES) - 1) < 1e-6
        spec = json.loads((fold / "model.json").read_text())
        assert spec["architecture"] == "test_resnet" and spec["class_names"] == CLASSES
        assert spec["preprocessing"] == {"size_hw": [16, 16], "channels": 1, "resize": "resize"}
        assert load_file(str(fold / "model.safetensors"))
    assert not list(out.rglob("*.tmp"))

    pred_out = tmp_path / "preds.csv"
    done = runner.invoke(app, ["predict", str(out), str(tiny_splits / "test"), "--out", str(pred_out), "--quiet"])
    assert done.exit_code == 0, done.output
    preds = _read_csv(pred_out)
    assert len(preds) == 12
    assert list(preds[0]) == ["path", *[f"prob_{c}" for c in CLASSES], "predicted"]
    assert all(r["predicted"] in CLASSES for r in preds)

    one = runner.invoke(app, ["predict", str(out), str(tiny_splits / "test" / "circle"), "--fold", "1",
                              "--out", str(tmp_path / "one.csv")])
    assert one.exit_code == 0, one.output
    assert len(_read_csv(tmp_path / "one.csv")) == 4


def test_resume_skips_complete_folds_and_ends_with_the_same_summary(trained_run: Path, copy_run, tiny_config: Path,
                                                                   figures_not_drawn):
    out = copy_run(trained_run)  # trained from tiny_config's study: the same config fingerprint
    args = ["run", str(tiny_config), "--out", str(out), "--quiet"]
    first = json.loads((out / "summary.json").read_text())
    (out / "fold-1" / "metrics.json").unlink()  # as if killed during fold 1
    (out / "summary.json").unlink()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "fold 0: already complete, skipped" in again.output
    assert "fold 1: already complete" not in again.output
    second = json.loads((out / "summary.json").read_text())
    assert second["metrics"] == first["metrics"] and second["ensemble"] == first["ensemble"]


def test_a_different_config_is_refused_unless_overwrite(trained_run: Path, copy_run, tiny_config: Path, figures_not_drawn):
    out = copy_run(trained_run)  # a finished run of tiny_config's study
    other = ["run", str(tiny_config), "--out", str(out), "-o", "training.optimizer.lr=0.01"]
    refused = runner.invoke(app, other)
    assert refused.exit_code == 2
    assert "holds a run of a different config" in refused.output
    assert "training.optimizer.lr: 0.001 -> 0.01" in refused.output
    assert "Traceback" not in refused.output
    # not --quiet: the progress bars must not break a run
    forced = runner.invoke(app, other + ["-o", "training.epochs=1", "--overwrite"])
    assert forced.exit_code == 0, forced.output
    assert "auc_macro" in forced.output and "ensemble" in forced.output
    resolved = yaml.safe_load((out / "config.yaml").read_text())["training"]
    assert (resolved["optimizer"]["lr"], resolved["epochs"]) == (0.01, 1)
    assert all(len(_read_csv(out / f"fold-{k}" / "history.csv")) == 1 for k in (0, 1))  # retrained, not resumed


def test_validate_prints_resolved_config_or_one_paragraph_errors(tiny_config: Path, tmp_path: Path):
    ok = runner.invoke(app, ["validate", str(tiny_config)])
    assert ok.exit_code == 0 and "optimizer:" in ok.output and "name: adamw" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(tiny_config.read_text().replace("epochs: 2", "epochz: 2"))
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "training.epochz: unknown key. Did you mean 'training.epochs'?" in " ".join(result.output.split())


def test_bad_data_is_a_clear_error_not_a_traceback(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"source": {"type": "folder", "path": "nowhere"}}}))
    done = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "r"), "--quiet"])
    assert done.exit_code == 2
    assert "nowhere" in done.stderr and "Traceback" not in done.stderr


def test_version_and_help_examples():
    done = medclf("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"medclf {__version__}"
    for command in ("run", "validate", "demo", "predict"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert f"Example: medclf {command}" in result.output


def test_show_batch_writes_a_grid_of_one_augmented_batch(tiny_config, tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["show-batch", str(tiny_config), "--out", str(out), "-o",
                                 "training.augmentation.presets=[basic]", "-o", "training.oversample=augment"])
    assert result.exit_code == 0, result.output
    assert "8 augmented training images" in " ".join(result.output.split())
    assert Image.open(out).size[0] > 400


def test_validate_checks_a_sweep_file_variant_by_variant(tmp_path: Path):
    sweeps = Path(__file__).resolve().parents[2] / "examples" / "sweeps"
    skip_if_it_reads_absent_real_data(sweeps / "imbalance.yaml")
    result = runner.invoke(app, ["validate", str(sweeps / "imbalance.yaml")])
    assert result.exit_code == 0, result.output
    assert "a valid sweep of 4 variant(s), baseline cross_entropy" in " ".join(result.output.split())
    bad = tmp_path / "bad.yaml"
    bad.write_text((sweeps / "imbalance.yaml").read_text().replace("class_weights: balanced", "class_weight: balanced")
                   .replace("../../../shared", str(sweeps.parents[2] / "shared")))
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2 and "class_weighted" in result.output and "class_weight" in result.output


def test_early_stopping_writes_its_stop_epoch_into_the_folds_metrics(tiny_config: Path, tmp_path: Path):
    # a learning rate of ~0 leaves the validation loss flat: epoch 2 is no improvement of 0.5, so it stops there
    out = tmp_path / "stop"
    result = runner.invoke(app, ["run", str(tiny_config), "--out", str(out), "--quiet", "-o", "training.epochs=6",
                                 "-o", "training.optimizer.lr=1e-12", "-o", "training.scheduler.name=none",
                                 "-o", "training.early_stopping.patience=1",
                                 "-o", "training.early_stopping.min_delta=0.5", "-o", "cv.mode=holdout"])
    assert result.exit_code == 0, result.output
    fold = json.loads((out / "fold-0" / "metrics.json").read_text())  # holdout: one fold says it all
    assert (fold["stopped_epoch"], fold["epochs_run"]) == (2, 2)
    assert len(_read_csv(out / "fold-0" / "history.csv")) == 2


def test_augmented_batch_matches_the_config():
    from medclf.config import parse_config
    from medclf.experiments.preview import augmented_batch

    cfg = parse_config({"data": {"source": {"type": "synthetic", "n_patients": 48, "slices_per_patient": 1,
                                            "image_size": 32}, "image_size": 32},
                        "training": {"batch_size": 12, "augmentation": {"presets": []}}, "cv": {"n_folds": 2}})
    images, names, copies = augmented_batch(cfg)
    assert images.shape == (12, 1, 32, 32) and len(names) == 12 and not any(copies)


def test_predict_uses_the_activation_the_model_was_trained_with(tiny_config: Path, tiny_splits: Path, tmp_path: Path):
    out = tmp_path / "bce"
    result = runner.invoke(app, ["run", str(tiny_config), "--out", str(out), "--quiet", "-o", "training.epochs=1",
                                 "-o", "training.loss.name=bce", "-o", "training.loss.pos_weight=balanced",
                                 "-o", "cv.mode=holdout"])  # one fold: predict is checked against fold 0
    assert result.exit_code == 0, result.output
    spec = json.loads((out / "fold-0" / "model.json").read_text())
    assert spec["activation"] == "normalised_sigmoid" and spec["n_classes"] == 3
    fold = json.loads((out / "fold-0" / "metrics.json").read_text())
    assert fold["stopped_epoch"] is None and fold["epochs_run"] == 1
    rows = _read_csv(out / "fold-0" / "predictions.csv")
    done = runner.invoke(app, ["predict", str(out), str(tiny_splits / "test"), "--out", str(tmp_path / "p.csv"),
                               "--fold", "0", "--quiet"])
    assert done.exit_code == 0, done.output
    preds = {Path(r["path"]).name: r for r in _read_csv(tmp_path / "p.csv")}
    for row in (r for r in rows if r["split"] == "test"):
        pred = preds[Path(row["id"]).name]
        assert sum(float(pred[f"prob_{c}"]) for c in CLASSES) == pytest.approx(1.0)
        assert float(pred["prob_circle"]) == pytest.approx(float(row["prob_circle"]), abs=1e-5)


def test_predict_precision_bf16_runs_where_the_cpu_has_bf16_and_fp16_is_refused(trained_run: Path, tiny_splits: Path,
                                                                                tmp_path: Path, monkeypatch):
    from medclf.training import device

    test = str(tiny_splits / "test")
    exact = runner.invoke(app, ["predict", str(trained_run), test, "--out", str(tmp_path / "fp32.csv"),
                                "--engine", "torch", "-q"])
    assert exact.exit_code == 0, exact.output
    monkeypatch.setattr(device, "_cpu_capabilities", lambda: {"cpu_name": "Test CPU", "avx512_bf16": True})
    low = runner.invoke(app, ["predict", str(trained_run), test, "--out", str(tmp_path / "bf16.csv"),
                              "--precision", "bf16", "-q"])  # auto: bf16 runs the torch engine
    assert low.exit_code == 0, low.output
    assert "(torch engine)" in low.output
    a, b = _read_csv(tmp_path / "fp32.csv"), _read_csv(tmp_path / "bf16.csv")
    assert [r["path"] for r in a] == [r["path"] for r in b]
    diff = max(abs(float(x[f"prob_{c}"]) - float(y[f"prob_{c}"])) for x, y in zip(a, b) for c in CLASSES)
    assert 0 < diff < 0.05  # bf16 ran, and stayed close to fp32
    wrong = runner.invoke(app, ["predict", str(trained_run), test, "--out", str(tmp_path / "x.csv"),
                                "--precision", "fp16"])
    assert wrong.exit_code != 0
    assert "--precision must be fp32 or bf16 (bf16: autocast with the torch engine), got 'fp16'." in wrong.output
    assert "Traceback" not in wrong.output
    monkeypatch.setattr(device, "_cpu_capabilities", lambda: {"cpu_name": "Test CPU", "avx2": True})
    refused = runner.invoke(app, ["predict", str(trained_run), test, "--out", str(tmp_path / "y.csv"),
                                  "--precision", "bf16"])
    assert refused.exit_code != 0 and "which Test CPU lacks" in " ".join(refused.output.split())
