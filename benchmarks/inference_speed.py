#!/usr/bin/env python
"""Inference speed on the CPU: images/s of prediction along each path medclf could take, against the speed of light
of that path, and of ``medclf predict``'s own functions (issue 16, requirement 4). Run by hand, never by the tests.

For each model (timm's ``test_resnet`` with output_stride 8 at 28 px, ``tf_efficientnet_lite0`` at 128 px,
``resnet18``, medclf's default model, at 224 px; 1 channel; random weights) a real run folder is trained first (one
epoch on random images, ``cv.mode: holdout``: one fold, so each prediction is one model's work), then every path
predicts the same ``--images`` uint8 images at each ``--batch-sizes``, on ``--threads`` torch threads, the median of
``--repeats`` passes after a warm-up pass:

- **paths** (``predict_proba`` with a given Runtime, as evaluation and ``predict`` call it: uint8 -> float, the model's
  normalisation, forward pass, softmax): ``fp32`` contiguous, ``channels_last``, ``bf16`` autocast (skipped with
  medclf's reason on a CPU without bf16 instructions), ``compile`` (``torch.compile`` in place, as
  ``training.compile`` does; its first call, the compile, is timed on its own) and ``onnxruntime`` (medclf's export
  graph: ``to_onnx(ExportGraph)`` run by ``OnnxModel.predict``; the export is timed on its own);
- **speed of light** of each path: the network alone on input already float, normalised and in the path's memory
  format (the same autocast or compile), in ``torch.inference_mode``; for onnxruntime, the network alone exported
  the same way (``to_onnx``) and fed prepared float batches; both onnxruntime sessions keep its default options,
  as ``OnnxModel`` does (intra-op threads: one per physical core);
- **what predict does**: ``ensemble_proba`` on the loaded fold models (a uint8 tensor in), and ``predict_inputs``
  on a folder of PNGs (decoding, the run folder's checks and loading included) with the torch engine and with the
  onnx engine (after ``export_onnx``).

Writes ``inference_speed.json`` and ``inference_speed.md`` to ``--out``.

    .venv/bin/python benchmarks/inference_speed.py --out /tmp/inference        # every model, ~25 min on 2 cores
    .venv/bin/python benchmarks/inference_speed.py --quick --out /tmp/inference-quick   # smoke check (no compile)
    .venv/bin/python benchmarks/inference_speed.py --quick --paths compile --out /tmp/inference-quick  # compile
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import cpu_bf16_refusal, ips, load1, machine_info, machine_line, med, write_results
from torch import nn

from medclf.config import parse_config
from medclf.experiments.study import run_study
from medclf.inference.export import ExportGraph, OnnxModel, export_onnx, to_onnx
from medclf.inference.predict import ensemble_proba, fold_models, predict_inputs
from medclf.models import Classifier
from medclf.training import predict_proba
from medclf.training.device import Runtime, compiler_problem, inference_runtime, torch_threads

# name, image side (px), model kwargs
MODELS = {"test_resnet": (28, {"output_stride": 8}), "tf_efficientnet_lite0": (128, {}), "resnet18": (224, {})}
PATHS = ("fp32", "channels_last", "bf16", "compile", "onnxruntime")
CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------ the run
def make_run(name: str, size: int, kwargs: dict[str, Any], work: Path, *, threads: int) -> Path:
    """A real one-fold run folder of ``name`` trained one epoch on random images (what predict and export read)."""
    rng = np.random.default_rng(0)
    npz = work / f"{name}.npz"
    parts = {"train": 64, "val": 32, "test": 32}
    np.savez(npz, **{f"{split}_images": rng.integers(0, 256, (n, size, size), dtype=np.uint8)
                     for split, n in parts.items()},
             **{f"{split}_labels": (np.arange(n) % 2).reshape(-1, 1) for split, n in parts.items()})
    config = parse_config({
        "name": f"inference-{name}",
        "data": {"source": {"type": "npz", "path": str(npz), "class_names": ["a", "b"]}, "image_size": size,
                 "channels": 1, "cache_dir": str(work / "cache")},
        "model": {"name": name, "pretrained": False, "kwargs": kwargs},
        "training": {"recipe": "finetune", "epochs": 1, "batch_size": 32, "device": "cpu", "num_threads": threads},
        "cv": {"mode": "holdout"},
    })
    run_dir = work / f"run-{name}"
    run_study(config, run_dir, overwrite=True)
    return run_dir


def fresh_model(run_dir: Path) -> Classifier:
    """The run's one fold model, loaded anew (each path changes its model: layout, compile)."""
    ((_, model),) = fold_models(run_dir)
    return model.eval()


def write_pngs(images: torch.Tensor, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images.numpy()):
        Image.fromarray(img[0]).save(folder / f"{i:05d}.png")
    return folder


# ------------------------------------------------------------------------------------------------ timing
def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """(seconds of the first call, seconds of each of ``repeats`` later calls)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, times


def path_runtime(path: str, model: Classifier) -> Runtime:
    """The Runtime of ``path``; bf16 and compile keep predict's own layout choice (``inference_runtime``)."""
    auto = inference_runtime(model, CPU)
    return Runtime(device=CPU, amp_dtype=torch.bfloat16 if path == "bf16" else None,
                   channels_last={"fp32": False, "channels_last": True}.get(path, auto.channels_last))


def torch_path(path: str, run_dir: Path, images: torch.Tensor, batch: int, repeats: int) -> dict[str, Any]:
    """``predict_proba`` along ``path``, and the speed of light: the network alone on prepared input."""
    model = fresh_model(run_dir)
    runtime = path_runtime(path, model)
    runtime.place(model)
    if path == "compile":
        model.compile()  # in place, as Trainer does for training.compile
    activation = model.spec.get("activation", "softmax")

    def run() -> None:
        predict_proba(model, images, batch_size=batch, runtime=runtime, activation=activation)

    first, times = timed(run, repeats)

    sol = fresh_model(run_dir)
    runtime.place(sol)
    with torch.inference_mode():
        fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
        x = sol.norm(images.float().div_(255.0)).contiguous(memory_format=fmt)
    batches = list(x.split(batch))
    net = sol.net
    if path == "compile":
        net.compile()

    def run_sol() -> None:
        with torch.inference_mode(), runtime.autocast():
            for xb in batches:
                net(xb)

    sol_first, sol_times = timed(run_sol, repeats)
    n = len(images)
    row = {"path": path, "channels_last": runtime.channels_last, "precision": "bf16" if runtime.amp_dtype else "fp32",
           "medclf_ips": ips(n, med(times)), "sol_ips": ips(n, med(sol_times)), "times_s": times,
           "sol_times_s": sol_times, "first_call_s": first, "sol_first_call_s": sol_first}
    if path == "compile":  # the first call compiles: what it costs over a warm call
        row["compile_s"] = first - med(times)
        row["sol_compile_s"] = sol_first - med(sol_times)
    return row


class NetGraph(nn.Module):
    """The network alone, its input named ``image`` as ``to_onnx`` names the dynamic batch axis."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


def onnx_path(run_dir: Path, images: torch.Tensor, batch: int, repeats: int) -> dict[str, Any]:
    """medclf's export graph run by ``OnnxModel.predict``; the speed of light is the network alone exported the
    same way, fed prepared float batches, in a session with the same (default) options."""
    import onnxruntime as ort

    model = fresh_model(run_dir)
    start = time.perf_counter()
    data = to_onnx(ExportGraph([model]), images[:2]).SerializeToString()
    export_s = time.perf_counter() - start
    onnx_model = OnnxModel(data, {"class_names": model.spec["class_names"]})
    arr = images.numpy()
    first, times = timed(lambda: onnx_model.predict(arr, batch_size=batch), repeats)

    with torch.inference_mode():
        x = model.norm(images.float().div_(255.0)).contiguous()
    session = ort.InferenceSession(to_onnx(NetGraph(model.net), x[:2].clone()).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batches = [b.numpy() for b in x.split(batch)]
    sol_first, sol_times = timed(lambda: [session.run(None, {name: b}) for b in batches], repeats)
    n = len(arr)
    return {"path": "onnxruntime", "channels_last": False, "precision": "fp32", "medclf_ips": ips(n, med(times)),
            "sol_ips": ips(n, med(sol_times)), "times_s": times, "sol_times_s": sol_times, "first_call_s": first,
            "sol_first_call_s": sol_first, "export_s": export_s,
            "session_threads": "onnxruntime's default (intra-op: one per physical core)"}


def predict_functions(run_dir: Path, images: torch.Tensor, pngs: Path, batch: int, repeats: int,
                      export_dir: Path) -> list[dict[str, Any]]:
    """What ``medclf predict`` runs: ``ensemble_proba`` on a tensor, ``predict_inputs`` on PNG files (both engines)."""
    loaded = fold_models(run_dir)
    n = len(images)
    rows = []
    calls = {
        "ensemble_proba (torch, tensor in)": lambda: ensemble_proba(loaded, images, batch_size=batch, device=CPU),
        "predict_inputs (torch engine, PNGs)": lambda: predict_inputs(run_dir, [pngs], batch_size=batch,
                                                                     engine="torch"),
        "predict_inputs (onnx engine, PNGs)": lambda: predict_inputs(run_dir, [pngs], batch_size=batch,
                                                                    engine="onnx", model=export_dir),
        # `medclf predict RUN_DIR PNGS` as it stands: engine auto (the current export: onnx), the default batch
        "predict_inputs (defaults, PNGs)": lambda: predict_inputs(run_dir, [pngs]),
    }
    for label, call in calls.items():
        first, times = timed(call, repeats)
        rows.append({"function": label, "batch": batch, "ips": ips(n, med(times)), "times_s": times,
                     "first_call_s": first})
        print(f"    {label}, batch {batch}: {rows[-1]['ips']:.0f} images/s", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ one model
def bench_model(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size, kwargs = MODELS[name]
    size = args.size or size
    print(f"{name} at {size} px: training a one-fold run folder", flush=True)
    run_dir = make_run(name, size, kwargs, work, threads=args.threads)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 1, size, size), dtype=torch.uint8, generator=g)
    pngs = write_pngs(images, work / f"pngs-{name}")
    start = time.perf_counter()
    export_dir = export_onnx(run_dir).model_path.parent
    export_s = time.perf_counter() - start
    skipped = {"bf16": cpu_bf16_refusal(), "compile": compiler_problem()}
    rows, predict_rows = [], []
    for batch in args.batch_sizes:
        for path in args.paths:
            if skipped.get(path):
                rows.append({"path": path, "batch": batch, "skipped": skipped[path]})
                print(f"  batch {batch}, {path}: skipped ({skipped[path]})", flush=True)
                continue
            row = (onnx_path(run_dir, images, batch, args.repeats) if path == "onnxruntime"
                   else torch_path(path, run_dir, images, batch, args.repeats))
            rows.append(row | {"batch": batch})
            print(f"  batch {batch}, {path}: {row['medclf_ips']:.0f} images/s (speed of light "
                  f"{row['sol_ips']:.0f}; load {load1()})", flush=True)
        predict_rows += predict_functions(run_dir, images, pngs, batch, args.repeats, export_dir)
    return {"model": name, "image_size": size, "channels": 1, "kwargs": kwargs, "n_images": args.images,
            "auto_channels_last": inference_runtime(fresh_model(run_dir), CPU).channels_last,
            "export_onnx_s": export_s, "paths": rows, "predict": predict_rows}


# ------------------------------------------------------------------------------------------------ report
def markdown(results: dict[str, Any]) -> str:
    a = results["args"]
    lines = [f"Inference on the CPU ({machine_line(results['machine'])}); images/s, "
             f"median of {a['repeats']} passes over {a['images']} images after a warm-up pass.", "",
             "| model | px | batch | path | predict_proba images/s | speed of light images/s | / speed of light "
             "| one-off cost (s) |", "|---|---:|---:|---|---:|---:|---:|---|"]
    skipped: dict[str, str] = {}
    for m in results["models"]:
        for r in m["paths"]:
            head = f"| {m['model']} | {m['image_size']} | {r['batch']} | {_path_label(r, m)} "
            if "skipped" in r:
                lines.append(head + "| skipped: medclf refuses it here (below) | | | |")
                skipped[r["path"]] = r["skipped"]
                continue
            lines.append(head + f"| {r['medclf_ips']:.0f} | {r['sol_ips']:.0f} | {r['medclf_ips'] / r['sol_ips']:.2f} "
                         f"| {_one_off(r)} |")
    lines += [""] + [f"Skipped {path}: {reason}" for path, reason in skipped.items()]
    lines += ["", "What `medclf predict` runs (one fold model; `predict_inputs` decodes PNG files and checks the run "
              "folder on every call):", "", "| model | batch | function | images/s |", "|---|---:|---|---:|"]
    for m in results["models"]:
        for r in m["predict"]:
            lines.append(f"| {m['model']} | {r['batch']} | {r['function']} | {r['ips']:.0f} |")
    return "\n".join(lines)


def _path_label(row: dict[str, Any], model: dict[str, Any]) -> str:
    if row["path"] in ("bf16", "compile") and "channels_last" in row:
        return f"{row['path']} ({'channels_last' if row['channels_last'] else 'contiguous'}, predict's choice)"
    return row["path"]


def _one_off(row: dict[str, Any]) -> str:
    if "compile_s" in row:
        return f"compile {row['compile_s']:.1f} (speed of light {row['sol_compile_s']:.1f})"
    if "export_s" in row:
        return f"export {row['export_s']:.1f}"
    return ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=None,
                   help="default: all (--quick: test_resnet)")
    p.add_argument("--size", type=int, default=None, help="image side for every model (default: each model's own)")
    p.add_argument("--paths", nargs="+", choices=PATHS, default=None,
                   help="default: all (--quick: all but compile, whose compiles take minutes on 2 busy cores)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=None, help="default 64 256 (--quick: 32 64)")
    p.add_argument("--images", type=int, default=None,
                   help="images per pass, a multiple of every batch size (default 1024; --quick 64)")
    p.add_argument("--repeats", type=int, default=None, help="timed passes after the warm-up (default 5; --quick 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="folder for inference_speed.json and .md")
    p.add_argument("--quick", action="store_true", help="smoke check: test_resnet, 64 images, batches 32 and 64")
    args = p.parse_args(argv)
    no_compile = [name for name in PATHS if name != "compile"]
    for key, full, quick in (("models", list(MODELS), ["test_resnet"]), ("paths", list(PATHS), no_compile),
                             ("batch_sizes", [64, 256], [32, 64]),
                             ("images", 1024, 64), ("repeats", 5, 1)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if bad := [b for b in args.batch_sizes if args.images % b]:
        p.error(f"--images {args.images} is not a multiple of batch size {bad}: a shorter last batch would make "
                "torch.compile compile again inside the timed passes")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                               "load_avg_start": list(os.getloadavg()), "models": []}
    work = Path(tempfile.mkdtemp(prefix="medclf-inference-"))
    try:
        with torch_threads(args.threads):
            results["machine"]["torch_threads"] = torch.get_num_threads()
            for name in args.models:
                results["models"].append(bench_model(name, args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_avg_end"] = list(os.getloadavg())
    table = markdown(results)
    print("\n" + table)
    for path in write_results(args.out, "inference_speed", results, table):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
