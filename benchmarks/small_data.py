"""Small data: which recipe wins at 300, 600 and 1,200 images? (issue 17, requirement 3)

Runs the paired sweep ``examples/sweeps/small_data.yaml`` (a linear probe on EfficientNet-Lite0's frozen ImageNet
features against four ways to fine-tune it) on

- stratified subsets of PneumoniaMNIST's official train split (``--sizes``, seed 0), cross-validated in 5 folds,
  every fold model and the fold ensemble scored on the whole official test split (624 images), and
- synthetic head phantoms with ``--phantom-patients`` patients of 8 slices each (64 px, a fifth of the patients held
  out as the test split).

Every variant of one data set trains on the same folds, so each is tested against the probe fold by fold (the
corrected resampled t-test and Wilcoxon's signed-rank test, as ``medclf sweep`` does). The choice of a default reads
the cross-validation holdout; the test columns are reported, never used to choose. Prints (and with ``--markdown``
writes) one table per data set; ``--out`` keeps every run folder, so a killed run resumes where it stopped.

    .venv/bin/python benchmarks/small_data.py --out /tmp/small_data --markdown small_data.md    # ~1 h, 2 cores
    .venv/bin/python benchmarks/small_data.py --sizes 300 --skip-phantoms --variants linear_probe finetune
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "sweeps" / "small_data.yaml"
DEFAULT = "finetune"  # plain fine-tuning, the default before recipe: auto; every variant is tested against it too
NPZ = ROOT.parent / "shared" / "data" / "pneumoniamnist.npz"


def write_subset(npz: Path, n: int, out: Path, *, seed: int = 0) -> Path:
    """A stratified subset of ``n`` training images (class shares as in the full split); the test split whole."""
    path = out / f"pneumoniamnist-{n}.npz"
    if path.exists():
        return path
    full = np.load(npz)
    labels = full["train_labels"].reshape(-1)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        keep.append(rng.choice(members, round(n * len(members) / len(labels)), replace=False))
    idx = np.sort(np.concatenate(keep))
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, train_images=full["train_images"][idx], train_labels=full["train_labels"][idx],
             test_images=full["test_images"], test_labels=full["test_labels"])
    tmp.rename(path)
    return path


def sweep_file(name: str, data: dict[str, Any], cv: dict[str, Any], variants: list[str] | None, out: Path) -> Path:
    """The template with this data set (and only ``variants``, when given), written as ``out/<name>.yaml``."""
    raw = yaml.safe_load(TEMPLATE.read_text())
    raw["name"] = name
    raw["data"] = data
    raw["cv"] = cv
    if variants:
        raw["sweep"]["variants"] = {k: v for k, v in raw["sweep"]["variants"].items() if k in variants}
        if raw["sweep"]["baseline"] not in variants:
            raw["sweep"]["baseline"] = variants[0]
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_one(path: Path, out: Path, parallel: int) -> dict[str, Any]:
    from medclf.experiments.comparison import build_comparison, read_fold_results
    from medclf.experiments.sweep import run_sweep
    from medclf.experiments.sweep_config import load_sweep

    plan = load_sweep(path)
    start = time.perf_counter()
    run_sweep(plan, out, parallel=parallel, log=lambda m: print("  " + m, flush=True))
    wall = time.perf_counter() - start
    dirs = {v["name"]: v["run_dir"] for v in json.loads((out / "sweep.json").read_text())["variants"]}
    entries = [{"name": v.name, "overrides": v.overrides, "run_dir": dirs[v.name],
                "folds": read_fold_results(out / dirs[v.name], v.config.cv.n_folds)} for v in plan.variants]
    by_split = {split: build_comparison(entries, metric="auc_macro", split=split, baseline=plan.baseline)
                for split in ("holdout", "test")}
    names = [e["name"] for e in entries]
    default = DEFAULT if DEFAULT in names and DEFAULT != plan.baseline else None  # the recipe a user gets today
    vs_default = build_comparison(entries, metric="auc_macro", split="holdout", baseline=default) if default else None
    rows = []
    for e in entries:
        summary = json.loads((out / e["run_dir"] / "summary.json").read_text())
        hold = next(v for v in by_split["holdout"]["variants"] if v["name"] == e["name"])
        test = next(v for v in by_split["test"]["variants"] if v["name"] == e["name"])
        rows.append({
            "variant": e["name"],
            "n_train": int(np.mean([f["n_images"]["train"] for f in e["folds"]])),
            "holdout_auc": hold["metrics"]["auc_macro"], "holdout_vs": hold["vs_baseline"],
            "holdout_vs_default": next(v["vs_baseline"] for v in vs_default["variants"] if v["name"] == e["name"])
            if vs_default else None,
            "test_auc": test["metrics"]["auc_macro"], "test_vs": test["vs_baseline"],
            "holdout_acc": hold["metrics"]["accuracy"], "test_acc": test["metrics"]["accuracy"],
            "ensemble_test": summary["ensemble"].get("test", {}),
            "train_s_per_fold": float(np.mean([f["timing"]["train_s"] for f in e["folds"]])),
            "study_s": summary["timing"]["total_s"],
            "baseline": summary.get("baseline"),
        })
    return {"name": path.stem, "baseline": plan.baseline, "wall_s": wall, "rows": rows}


def _pm(stats: dict[str, Any]) -> str:
    return "n/a" if stats["mean"] is None else f"{stats['mean']:.3f} ± {stats['std'] or 0:.3f}"


def _vs(vs: dict[str, Any] | None) -> str:
    if not vs or vs["diff_mean"] is None:
        return "(reference)"
    w = vs["p_wilcoxon"]
    return f"{vs['diff_mean']:+.3f} (p {vs['p_corrected_t']:.3f}; W {w:.3f})" if w is not None else \
        f"{vs['diff_mean']:+.3f} (p {vs['p_corrected_t']:.3f})"


def _vs_default(row: dict[str, Any]) -> str:
    if row["variant"] == DEFAULT:
        return "(reference)"
    return _vs(row["holdout_vs_default"]) if row["holdout_vs_default"] else "n/a"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"**{result['name']}** (sweep wall {result['wall_s'] / 60:.1f} min; Δ against {result['baseline']}, "
             "paired over the 5 folds: corrected resampled t-test p, Wilcoxon W)", "",
             f"| recipe | holdout AUC | Δ holdout | Δ holdout vs {DEFAULT} | test AUC (folds) | Δ test "
             "| ensemble test AUC / acc | train s / fold |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        ens = r["ensemble_test"]
        ens_cell = f"{ens['auc_macro']:.3f} / {ens['accuracy']:.3f}" if ens else "n/a"
        lines.append(f"| {r['variant']} | {_pm(r['holdout_auc'])} | {_vs(r['holdout_vs'])} "
                     f"| {_vs_default(r)} "
                     f"| {_pm(r['test_auc'])} "
                     f"| {_vs(r['test_vs'])} | {ens_cell} | {r['train_s_per_fold']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/small_data"))
    parser.add_argument("--sizes", type=int, nargs="*", default=[300, 600, 1200])
    parser.add_argument("--phantom-patients", type=int, nargs="*", default=[40, 80, 160])
    parser.add_argument("--image-size", type=int, default=96, help="PneumoniaMNIST's 28 px upsampled to this")
    parser.add_argument("--variants", nargs="*", help="only these variants of the template")
    parser.add_argument("--parallel", type=int, default=2, help="folds at once (one thread each)")
    parser.add_argument("--skip-pneumonia", action="store_true")
    parser.add_argument("--skip-phantoms", action="store_true")
    parser.add_argument("--markdown", type=Path, help="append the tables to this file")
    parser.add_argument("--json", type=Path, help="write every result here")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    if not args.skip_pneumonia:
        if not NPZ.exists():
            print(f"skipping PneumoniaMNIST: {NPZ} not found", file=sys.stderr)
        else:
            for n in args.sizes:
                npz = write_subset(NPZ, n, args.out / "data")
                data = {"source": {"type": "npz", "path": str(npz), "class_names": ["normal", "pneumonia"]},
                        "image_size": args.image_size}
                jobs.append((f"pneumoniamnist-{n}", data, {"mode": "kfold", "n_folds": 5, "pool": ["train"]}))
    if not args.skip_phantoms:
        for p in args.phantom_patients:
            data = {"source": {"type": "synthetic", "n_patients": p, "slices_per_patient": 8, "image_size": 64},
                    "image_size": 64}
            jobs.append((f"phantoms-{p}x8", data, {"mode": "kfold", "n_folds": 5, "test_fraction": 0.2}))
    results = []
    for name, data, cv in jobs:
        print(f"{name}:", flush=True)
        path = sweep_file(name, data, cv, args.variants, args.out)
        result = run_one(path, args.out / name, args.parallel)
        results.append(result)
        text = markdown(result)
        print(text, flush=True)
        if args.markdown:
            with args.markdown.open("a") as fh:
                fh.write(text + "\n")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
