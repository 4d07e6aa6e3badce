#!/usr/bin/env python
"""Time to accuracy: the fold ensemble's test (or holdout) AUC and accuracy after every epoch, against the seconds
of compute spent to get there, for each training recipe (issue 16, requirement 3). Run by hand, never by the tests.

For every config and every ``--recipes`` entry (``training.recipe`` overridden), the study runs through medclf's own
API (``prepare_study``, ``run_fold`` for each fold in turn, ``summarize_study``), so each fold trains exactly as
``medclf run`` trains it. A training callback predicts the scored split with each epoch's weights, as the fold's own
evaluation would (its batch size, activation and ``evaluation.tta``), and records (fold, epoch, training seconds so
far, probabilities). The prediction's own time is taken off the clock: the seconds are those of the fit alone
(setup, epochs and their validation).

Then, for each epoch e:

- the ensemble is each image's mean probability over the folds at epoch e (on the test split every fold predicts
  every image; with ``--holdout`` each image is predicted by the one fold that held it out, so this is the pooled
  out-of-fold score), scored with medclf's metrics (AUC macro, accuracy);
- x = the study's data-loading seconds + the sum over folds of their training seconds through epoch e: the compute
  one run of the study through epoch e costs, the folds run one after the other.

A fold that stopped early holds its last epoch (and its seconds) for the later epochs. The last row is the
epoch-by-epoch ensemble at the last epoch; medclf's own result (best-epoch weights, as ``summary.json``) is
reported beside it.

Writes to ``--out``: ``time_to_accuracy.json`` (every curve, per-fold seconds and metrics), ``time_to_accuracy.md``
(the tables), the figure (``--figure``, default ``<out>/time_to_accuracy.png``: metric against seconds, one line per
recipe, one row of panels per config), and each study's run folder with its ``epoch_probabilities.npz``.

    .venv/bin/python benchmarks/time_to_accuracy.py --out /tmp/tta                    # PneumoniaMNIST, 2 recipes
    .venv/bin/python benchmarks/time_to_accuracy.py examples/pneumoniamnist.yaml examples/demo.yaml \\
        --out /tmp/tta --figure docs/img/time_to_accuracy.png
    .venv/bin/python benchmarks/time_to_accuracy.py --quick --out /tmp/tta-quick       # smoke check, tiny phantoms
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import load1, machine_info, machine_line, write_results

from medclf.config import load_config
from medclf.data.rows import Rows
from medclf.evaluation.metrics import classification_metrics
from medclf.experiments.study import prepare_study, run_fold, summarize_study
from medclf.experiments.validation import check_config
from medclf.training import Callback, Trainer, predict_proba

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "examples" / "pneumoniamnist.yaml"
DEMO_CONFIG = ROOT / "examples" / "demo.yaml"
DEFAULT_RECIPES = ["finetune", "sgd"]  # the default recipe against the seeds' plain SGD (config/training.py RECIPES)
# --quick: tiny phantoms, 2 folds of 2 epochs; a smoke check of the script, not a measurement
QUICK_OVERRIDES = ["data.source.n_patients=80", "data.source.slices_per_patient=4", "data.source.image_size=32",
                   "data.image_size=32", "training.epochs=2", "cv.n_folds=2"]
QUICK_ANY = ["training.epochs=2", "cv.n_folds=2"]  # --quick with a config of one's own


class EpochPredictions(Callback):
    """After every epoch, predict rows ``index`` with the epoch's weights; keep the fit's seconds without them."""

    def __init__(self, images: Rows, index: np.ndarray, *, batch_size: int, tta: list[str]) -> None:
        self.images, self.index, self.batch_size, self.tta = images.subset(index), index, batch_size, tta
        self.records: list[dict[str, Any]] = []  # {"epoch", "train_s", "probs"}, one per epoch
        self._start = 0.0
        self._excluded = 0.0  # seconds spent in this callback's predictions

    def on_fit_start(self, trainer: Trainer) -> None:
        self._start, self._excluded = time.perf_counter(), 0.0

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        begin = time.perf_counter()
        train_s = begin - self._start - self._excluded
        probs = predict_proba(trainer.model, self.images, batch_size=self.batch_size, runtime=trainer.runtime,
                              activation=trainer.activation, tta=self.tta)
        self.records.append({"epoch": epoch, "train_s": train_s, "probs": probs.astype(np.float32)})
        self._excluded += time.perf_counter() - begin


def run_recipe(path: Path, recipe: str, overrides: list[str], *, split: str, out: Path) -> dict[str, Any]:
    """One study of ``path`` with ``training.recipe: recipe``; its per-epoch ensemble curve and final result."""
    config = load_config(path, overrides=[f"training.recipe={recipe}", *overrides])
    check_config(config, origin=str(path))
    run_dir = out / f"{config.name}-{recipe}"
    print(f"{config.name}, recipe {recipe}: {run_dir}", flush=True)
    start = time.perf_counter()
    study = prepare_study(config, run_dir, overwrite=True, log=lambda m: print("  " + m, flush=True))
    if study.data.multilabel:
        raise SystemExit(f"{path}: a multi-label task; this benchmark scores single-label ensembles only")
    images = Rows(study.data.images)
    per_fold: dict[int, tuple[np.ndarray, list[dict[str, Any]]]] = {}
    results = []
    for k in study.indices:
        fold = next(f for f in study.folds if f.index == k)
        index = fold.holdout if split == "holdout" else fold.test
        if len(index) == 0:
            raise SystemExit(f"{path}: fold {k} has no {split} split to score; "
                             + ("use --holdout (cv.mode kfold)" if split == "test" else "use a kfold config"))
        recorder = EpochPredictions(images, index, batch_size=config.training.eval_batch_size,
                                    tta=list(config.evaluation.tta))
        results.append(run_fold(config, study, k, run_dir, callbacks=[recorder]))
        per_fold[k] = (index, recorder.records)
        last = recorder.records[-1]
        print(f"  fold {k}: {len(recorder.records)} epochs, {last['train_s']:.1f} s training "
              f"(load {load1()})", flush=True)
    summary = summarize_study(config, study, run_dir, results)
    save_probabilities(run_dir / "epoch_probabilities.npz", per_fold)
    curve = ensemble_curve(study.data.labels, study.data.class_names, per_fold, data_s=study.data_s)
    return {
        "config": str(path), "name": config.name, "recipe": recipe, "split": split, "overrides": overrides,
        "run_dir": str(run_dir), "data_s": study.data_s, "wall_s": time.perf_counter() - start,
        "n_scored": int(len(np.unique(np.concatenate([i for i, _ in per_fold.values()])))),
        "folds": {str(k): {"epochs": len(r), "train_s": [x["train_s"] for x in r],
                           "recipe": res.get("recipe"), "best_epoch": res.get("best_epoch")}
                  for (k, (_, r)), res in zip(per_fold.items(), results)},
        "curve": curve,
        "medclf_ensemble": summary.get("ensemble", {}).get(split) if split == "test" else None,
    }


def ensemble_curve(labels: np.ndarray, class_names: list[str], per_fold: dict[int, tuple[np.ndarray, list]], *,
                   data_s: float) -> list[dict[str, float]]:
    """For each epoch: seconds so far, and the ensemble's and the folds' mean AUC and accuracy at that epoch."""
    n_epochs = max(len(records) for _, records in per_fold.values())
    n_classes = len(class_names)
    curve = []
    for e in range(n_epochs):
        total, count = np.zeros((len(labels), n_classes)), np.zeros(len(labels))
        seconds, fold_metrics = data_s, []
        for index, records in per_fold.values():
            rec = records[min(e, len(records) - 1)]  # a fold that stopped early holds its last epoch
            total[index] += rec["probs"]
            count[index] += 1
            seconds += rec["train_s"]
            fold_metrics.append(classification_metrics(labels[index], rec["probs"].astype(np.float64),
                                                       class_names=class_names))
        scored = count > 0
        probs = total[scored] / count[scored, None]
        m = classification_metrics(labels[scored], probs, class_names=class_names)
        curve.append({"epoch": e + 1, "seconds": seconds, "auc": m["auc_macro"], "accuracy": m["accuracy"],
                      "fold_auc_mean": float(np.mean([f["auc_macro"] for f in fold_metrics])),
                      "fold_accuracy_mean": float(np.mean([f["accuracy"] for f in fold_metrics]))})
    return curve


def save_probabilities(path: Path, per_fold: dict[int, tuple[np.ndarray, list[dict[str, Any]]]]) -> None:
    """Each fold's scored rows, per-epoch training seconds and (epochs, rows, classes) probabilities."""
    arrays = {}
    for k, (index, records) in per_fold.items():
        arrays[f"fold{k}_index"] = index
        arrays[f"fold{k}_train_s"] = np.array([r["train_s"] for r in records])
        arrays[f"fold{k}_probs"] = np.stack([r["probs"] for r in records])
    np.savez_compressed(path, **arrays)


def time_to_reach(curve: list[dict[str, float]], key: str, target: float) -> float | None:
    """The seconds of the first epoch whose ensemble ``key`` is at least ``target``; None if none is."""
    return next((row["seconds"] for row in curve if row[key] >= target), None)


# ------------------------------------------------------------------------------------------------- report
def markdown(results: dict[str, Any], *, target_auc: float, target_accuracy: float) -> str:
    runs = results["runs"]
    lines = [f"Time to accuracy ({machine_line(results['machine'])}); seconds = data loading + the folds' "
             "training, run one after the other; the ensemble is the folds' mean probability at each epoch.", "",
             f"| config | recipe | split | best ensemble AUC (epoch, s) | last epoch AUC / acc (s) "
             f"| s to AUC >= {target_auc} | s to acc >= {target_accuracy} | medclf's ensemble AUC / acc |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        curve = r["curve"]
        best = max(curve, key=lambda row: row["auc"])
        last = curve[-1]
        reach_auc, reach_acc = time_to_reach(curve, "auc", target_auc), time_to_reach(curve, "accuracy",
                                                                                         target_accuracy)
        med = r["medclf_ensemble"]
        med_cell = f"{med['auc_macro']:.3f} / {med['accuracy']:.3f}" if med else "n/a"
        lines.append(f"| {r['name']} | {r['recipe']} | {r['split']} | {best['auc']:.3f} ({best['epoch']}, "
                     f"{best['seconds']:.0f}) | {last['auc']:.3f} / {last['accuracy']:.3f} ({last['seconds']:.0f}) "
                     f"| {_cell(reach_auc)} | {_cell(reach_acc)} | {med_cell} |")
    for r in runs:
        lines += ["", f"**{r['name']}, recipe {r['recipe']}** ({r['split']} split, {r['n_scored']} images; data "
                  f"{r['data_s']:.1f} s):", "",
                  "| epoch | seconds | ensemble AUC | ensemble accuracy | mean fold AUC | mean fold accuracy |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for row in r["curve"]:
            lines.append(f"| {row['epoch']} | {row['seconds']:.1f} | {row['auc']:.4f} | {row['accuracy']:.4f} "
                         f"| {row['fold_auc_mean']:.4f} | {row['fold_accuracy_mean']:.4f} |")
    return "\n".join(lines)


def _cell(seconds: float | None) -> str:
    return "not reached" if seconds is None else f"{seconds:.0f}"


def figure(results: dict[str, Any], path: Path, *, targets: dict[str, float]) -> Path:
    """Ensemble AUC and accuracy against seconds: one row of two panels per config, one line per recipe, the
    ``targets`` ({"auc": ..., "accuracy": ...}) as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["name"] for r in results["runs"]))
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.6 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for col, (key, label) in enumerate((("auc", "ensemble AUC"), ("accuracy", "ensemble accuracy"))):
            ax = axes[row][col]
            for r in (r for r in results["runs"] if r["name"] == name):
                xs = [p["seconds"] for p in r["curve"]]
                ax.plot(xs, [p[key] for p in r["curve"]], marker="o", markersize=3, label=r["recipe"])
            ax.axhline(targets[key], color="grey", linestyle="--", linewidth=0.8)
            split = next(r["split"] for r in results["runs"] if r["name"] == name)
            ax.set_title(f"{name}: {label} ({split} split)", fontsize=10)
            ax.set_xlabel("seconds (data + training, folds in turn)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend(title="recipe", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("configs", nargs="*", type=Path,
                   help=f"study configs (default {DEFAULT_CONFIG.relative_to(ROOT)}; --quick: tiny phantoms)")
    p.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES, help="training.recipe values (default %(default)s)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every study, as medclf run -o (repeatable)")
    p.add_argument("--holdout", action="store_true",
                   help="score the cross-validation holdout (pooled out-of-fold) instead of the test split")
    p.add_argument("--out", type=Path, required=True, help="folder for the JSON, Markdown, figure and run folders")
    p.add_argument("--figure", type=Path, default=None, help="the PNG (default <out>/time_to_accuracy.png)")
    p.add_argument("--target-auc", type=float, default=0.975, help="report the seconds to this AUC (%(default)s)")
    p.add_argument("--target-accuracy", type=float, default=0.90, help="and to this accuracy (%(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="smoke check: 2 folds x 2 epochs (and, without configs, 80 tiny phantom patients of 4 slices)")
    args = p.parse_args(argv)
    if not args.configs:
        args.configs = [DEMO_CONFIG] if args.quick else [DEFAULT_CONFIG]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    split = "holdout" if args.holdout else "test"
    results: dict[str, Any] = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                               "load_avg_start": list(os.getloadavg()), "runs": []}
    for path in args.configs:
        quick = (QUICK_OVERRIDES if path == DEMO_CONFIG else QUICK_ANY) if args.quick else []
        for recipe in args.recipes:
            results["runs"].append(run_recipe(path, recipe, [*quick, *args.override], split=split, out=args.out))
    results["load_avg_end"] = list(os.getloadavg())
    table = markdown(results, target_auc=args.target_auc, target_accuracy=args.target_accuracy)
    print("\n" + table)
    written = write_results(args.out, "time_to_accuracy", results, table)
    written.append(figure(results, args.figure or args.out / "time_to_accuracy.png",
                          targets={"auc": args.target_auc, "accuracy": args.target_accuracy}))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
