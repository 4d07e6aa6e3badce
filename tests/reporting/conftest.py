"""Fabricated run folders that follow docs/outputs.md (and the patient / multi-label keys of the contract).

Metrics are computed from the fabricated predictions with medclf's own functions, as a real run does, so the
report's numbers can be checked against the JSON; no training, so these tests take a second.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from medclf.atomic import atomic_write_csv, atomic_write_json
from medclf.config import config_fingerprint, parse_config
from medclf.evaluation.metrics import aggregate_folds, classification_metrics, confusion
from medclf.runfolder import choose_gallery, read_predictions, record_complete, write_gallery

CLASSES = ["blank", "circle", "square"]


def _probs(rng: np.random.Generator, y: np.ndarray, k: int, skill: float) -> np.ndarray:
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += skill
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def _rows(split: str, ids: list[str], labels: list[str], probs: np.ndarray, predicted: list[str]) -> list[dict]:
    return [
        {"split": split, "id": i, "label": lab, "predicted": pred} | {f"prob_{c}": float(p[j]) for j, c in enumerate(CLASSES)}
        for i, lab, p, pred in zip(ids, labels, probs, predicted)
    ]


def _multilabel_metrics(truth: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    from medclf.evaluation.multilabel import multilabel_metrics

    return multilabel_metrics(truth, probs, class_names=CLASSES, thresholds=0.5)


def build_run(root: Path, *, n_folds: int = 3, multilabel: bool = False, patient: bool = False,
              stopped: bool = True, with_step: bool = False, data_path: str = "/nonexistent/data",
              environment: bool = True, gallery: bool = True) -> Path:
    """Write a complete run folder with ``n_folds`` folds, a test split and the fold ensemble.

    ``environment`` False leaves summary.json without ``environment``, as runs before it was recorded;
    ``gallery`` False leaves out gallery.npz, as runs before it was kept.
    """
    rng = np.random.default_rng(0)
    k = len(CLASSES)
    root.mkdir(parents=True, exist_ok=True)
    config = {"name": "fabricated", "seed": 0,
              "data": {"source": {"type": "folder", "path": data_path}, "image_size": 16},
              "model": {"name": "test_resnet"}, "training": {"epochs": 4, "monitor": "val_loss"},
              "cv": {"mode": "kfold", "n_folds": n_folds}}
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    fingerprint = config_fingerprint(parse_config(config, base_dir=root))  # the report checks config.yaml by it
    atomic_write_json(root / "run.json", {"config_fingerprint": fingerprint, "medclf_version": "0.1.0"})
    data = {"n_images": 90, "classes": CLASSES, "counts": {"train": {c: 24 for c in CLASSES}, "test": {c: 6 for c in CLASSES}},
            "image_shape": [1, 16, 16], "n_patients": 30 if patient else None, "fingerprint": "feedfacefeedface",
            "root": data_path, "duplicates": {"count": 1, "groups": [["a.png", "b.png"]]}}
    if multilabel:
        data["cooccurrence"] = {a: {b: (10 if a == b else 3) for b in CLASSES} for a in CLASSES}
    atomic_write_json(root / "data.json", data)

    test_ids = [f"test/{i}" for i in range(18)]
    test_y = np.arange(18) % k
    test_truth = (rng.random((18, k)) < 0.4).astype(int) if multilabel else None
    results, test_probs = [], []
    for fold in range(n_folds):
        fd = root / f"fold-{fold}"
        rows, metrics, confusions = [], {}, {}
        for split, n in (("val", 12), ("holdout", 24), ("test", 18)):
            ids = test_ids if split == "test" else [f"train/{fold}-{split}-{i}" for i in range(n)]
            if multilabel:
                truth = test_truth if split == "test" else (rng.random((n, k)) < 0.4).astype(int)
                probs = np.clip(truth * 0.6 + rng.random((n, k)) * 0.5, 0, 1)
                labels = ["|".join(c for c, t in zip(CLASSES, row) if t) for row in truth]
                predicted = ["|".join(c for c, p in zip(CLASSES, row) if p >= 0.5) for row in probs]
                metrics[split] = _multilabel_metrics(truth, probs)
            else:
                y = test_y if split == "test" else np.arange(n) % k
                probs = _probs(rng, y, k, skill=0.8)
                labels, predicted = [CLASSES[i] for i in y], [CLASSES[i] for i in probs.argmax(1)]
                metrics[split] = classification_metrics(y, probs, class_names=CLASSES)
                confusions[split] = confusion(y, probs, n_classes=k)
            if patient:
                metrics[split]["patient"] = {"accuracy": 0.5 + 0.1 * fold, "balanced_accuracy": 0.5,
                                             "f1_macro": 0.4 + 0.05 * fold, "auc_macro": 0.7, "n_patients": 8}
            if split == "test":
                test_probs.append(probs)
            rows += _rows(split, ids, labels, probs, predicted)
        atomic_write_csv(fd / "predictions.csv", rows, ["split", "id", "label", *[f"prob_{c}" for c in CLASSES], "predicted"])
        if patient:
            prow = [{"split": "holdout", "patient_id": f"p{fold}-{i}", "label": CLASSES[i % k], "predicted": CLASSES[(i + (i % 4 == 0)) % k],
                     "n_images": 3} | {f"prob_{c}": 1 / k for c in CLASSES} for i in range(8)]
            atomic_write_csv(fd / "patient_predictions.csv", prow,
                             ["split", "patient_id", "label", *[f"prob_{c}" for c in CLASSES], "predicted", "n_images"])
        history = []
        for epoch in range(1, 5):
            row = {"epoch": epoch, "lr": 1e-3 / epoch, "train_loss": 1.2 / epoch, "val_accuracy": 0.5 + 0.1 * epoch,
                   "val_auc_macro": 0.6 + 0.08 * epoch, "val_loss": 1.0 / epoch + 0.05 * fold, "time_s": 0.1}
            if with_step:
                row["step"] = epoch * 7
            history.append(row)
        atomic_write_csv(fd / "history.csv", history, list(history[0]))
        result = {
            "fold": fold, "best_epoch": 3, "epochs_run": 4, "monitor": "val_loss", "best_score": 0.3,
            "metrics": metrics, "confusion": confusions,
            "n_images": {"train": 40, "val": 12, "holdout": 24, "test": 18},
            "timing": {"train_s": 10.0 + fold, "eval_s": 0.5},
            "parameters": {"total": 123456, "trainable": 123456, "size_mb": 0.471},
            "runtime": {"device": "cpu", "device_name": "cpu", "precision": "fp32", "channels_last": False},
        }
        if stopped:
            result["stopped_epoch"] = 4 if fold == 0 else None
        atomic_write_json(fd / "metrics.json", result)
        record_complete(fd, n_folds=n_folds)  # last, as a real run does
        results.append(result)

    mean = np.mean(test_probs, axis=0)
    if multilabel:
        labels = ["|".join(c for c, t in zip(CLASSES, row) if t) for row in test_truth]
        predicted = ["|".join(c for c, p in zip(CLASSES, row) if p >= 0.5) for row in mean]
        ens_metrics, ens_conf = _multilabel_metrics(test_truth, mean), {}
    else:
        labels, predicted = [CLASSES[i] for i in test_y], [CLASSES[i] for i in mean.argmax(1)]
        ens_metrics = classification_metrics(test_y, mean, class_names=CLASSES)
        ens_conf = {"test": confusion(test_y, mean, n_classes=k)}
    atomic_write_csv(root / "ensemble" / "predictions.csv", _rows("test", test_ids, labels, mean, predicted),
                     ["split", "id", "label", *[f"prob_{c}" for c in CLASSES], "predicted"])
    record_complete(root / "ensemble")
    summary_metrics = {}
    for split in ("val", "holdout", "test"):
        per_fold = [{m: v for m, v in r["metrics"][split].items() if m != "patient"} for r in results]
        summary_metrics[split] = aggregate_folds(per_fold)
        if patient:
            summary_metrics[split]["patient"] = aggregate_folds([r["metrics"][split]["patient"] for r in results])
    summary = {
        "name": "fabricated", "metrics": summary_metrics, "ensemble": {"test": ens_metrics},
        "ensemble_confusion": ens_conf, "best_epochs": [3] * n_folds,
        "timing": {"total_s": 40.0, "data_s": 1.5, "fold_train_s": [r["timing"]["train_s"] for r in results]},
        "data": {k2: v for k2, v in data.items() if k2 != "duplicates"} | {"n_duplicates": 1},
        "model": {"architecture": "test_resnet", "parameters": results[0]["parameters"]},
        "runtime": results[0]["runtime"], "config_fingerprint": fingerprint, "medclf_version": "0.1.0",
    }
    if multilabel:
        summary["task"] = "multilabel"
    if environment:
        from medclf.experiments.environment import run_environment

        summary["environment"] = run_environment(summary["runtime"]) | {"torch": "9.9.9"}  # told apart from here
    atomic_write_json(root / "summary.json", summary)
    if gallery:
        _write_gallery(root, n_folds=n_folds, multilabel=multilabel)
    return root


def _write_gallery(root: Path, *, n_folds: int, multilabel: bool) -> None:
    """gallery.npz as a run writes it: the images the gallery rule chooses (each image's pixels: its row number)."""
    ensemble = read_predictions(root / "ensemble" / "predictions.csv", CLASSES).get("test")
    folds = [(k, read_predictions(root / f"fold-{k}" / "predictions.csv", CLASSES)) for k in range(n_folds)]
    choice = choose_gallery(CLASSES, multilabel=multilabel, ensemble=ensemble, folds=folds)
    if choice is None or not choice.worst:
        return  # nothing misclassified: a run writes no gallery
    ids = [choice.predictions.ids[i] for i, _ in choice.worst]
    images = np.stack([np.full((1, 16, 16), i, dtype=np.uint8) for i, _ in choice.worst])
    write_gallery(root, ids, images)


@pytest.fixture()
def fabricated_run(tmp_path: Path) -> Callable[..., Path]:
    """``fabricated_run(**options)`` writes a run folder under tmp_path and returns it."""
    counter = iter(range(100))

    def make(**options) -> Path:
        return build_run(tmp_path / f"run{next(counter)}", **options)

    return make


@pytest.fixture()
def read_table() -> Callable[[Path, str], list[dict[str, str]]]:
    import csv

    def read(run_dir: Path, name: str) -> list[dict[str, str]]:
        with open(run_dir / "tables" / f"{name}.csv", newline="") as handle:
            return list(csv.DictReader(handle))

    return read




@pytest.fixture(scope="session")
def reported_run(tmp_path_factory) -> Path:
    """One fabricated 3-fold run with its report written, shared by the tests that only read it."""
    from medclf.reporting import write_report

    run = build_run(tmp_path_factory.mktemp("reported") / "run")
    write_report(run)
    return run


@pytest.fixture(scope="session")
def patient_report(tmp_path_factory) -> Path:
    """A fabricated run with patient-level results and its report, written once for the tests that read it."""
    from medclf.reporting import write_report

    run = build_run(tmp_path_factory.mktemp("patient") / "run", patient=True)
    write_report(run)
    return run


def build_audit(*, leak: bool = True, policy: str = "warn") -> dict:
    """audit.json as a run writes it (medclf.experiments.scoring.run_audit): the real audit of tiny data.

    Two folds over 12 images with patient ids; with ``leak``, fold 0 leaks (one of its training images copied
    into its holdout part, another brightened into the test split, a training patient with a test image)
    and fold 1, which trains on none of them, does not.
    """
    from medclf.data.audit import apply_leakage_policy, audit_dataset
    from medclf.data.dataset import ImageSet
    from medclf.data.splitting import Fold

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 1, 32, 32), dtype=np.uint8)
    groups = np.array([f"p{i}" for i in range(12)])
    if leak:
        images[4] = images[0]  # exact: fold 0 trains on 0, holds 4 out
        images[10] = np.clip(images[1].astype(int) + 3, 0, 255).astype(np.uint8)  # near, in test
        groups[11] = "p5"  # patient p5: a training image of fold 0 and a test image
    splits = np.array(["train"] * 10 + ["test"] * 2)
    data = ImageSet(images=images, labels=np.arange(12) % 2, ids=np.array([f"img{i}" for i in range(12)]),
                    splits=splits, class_names=["a", "b"], groups=groups)
    empty, test = np.array([], dtype=np.int64), np.array([10, 11])
    folds = [Fold(0, np.array([0, 1, 2, 3, 5, 6]), empty, np.array([4, 7, 8, 9]), test),
             Fold(1, np.array([2, 3, 6, 7, 8, 9]), empty, np.array([0, 1, 4, 5]), test)]
    result = audit_dataset(data, folds)
    report = result.report | {"policy": policy, "dropped": {}}
    if policy == "drop_duplicates":
        kept, _ = apply_leakage_policy(data, folds, result, policy)
        report["dropped"] = {str(f.index): sum(len(getattr(f, s)) - len(getattr(k, s)) for s in ("val", "holdout", "test"))
                             for f, k in zip(folds, kept)}
    return report


@pytest.fixture()
def real_audit() -> Callable[..., dict]:
    """``real_audit(leak=True, policy="warn")``: see :func:`build_audit`."""
    return build_audit
