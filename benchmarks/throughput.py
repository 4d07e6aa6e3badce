#!/usr/bin/env python
"""Training throughput and decode-cache benchmark for medclf (run by hand: ``make bench``; never by the tests).

Three measurements, printed as Markdown tables (and written as JSON with ``--out``):

1. **Pure compute vs medclf's loop.** For each model, images/second of

   * *pure*: a minimal hand-written loop over batches that are already float, already normalised (the model's
     own ``InputNorm`` applied once, up front) and already in the memory format medclf picks for that model:
     ``model.net(x)``, cross-entropy (label smoothing 0.1), ``zero_grad``, ``backward``, AdamW step, OneCycleLR
     step. Same model (``medclf.models.build_model``), same optimizer parameter groups, same schedule;
   * *medclf*: ``medclf.training.Trainer(...).fit(...)`` with the default recipe (AdamW, one-cycle, label
     smoothing 0.1, hflip) on a uint8 tensor of the same images, an empty validation set (``Trainer._validate``
     returns at once, so each epoch's ``time_s`` is training only), ``device="cpu"``.

   Both run the same number of steps per epoch; the epochs are interleaved (a callback's ``on_epoch_end``,
   which runs after medclf has taken the epoch's ``time_s``, runs one pure epoch of each variant), the first
   epoch of every path is a warm-up and is dropped, and the median of the others is reported. The pure loop
   also runs in the *other* memory format, which gives the channels_last on/off comparison.

2. **Input pipeline cost per batch**: the pieces medclf adds on top of pure compute (index gather, hflip,
   uint8 -> float, normalisation, memory-format conversion), timed alone.

3. **Cold vs warm epoch over an image folder**: a class-per-folder tree of JPEGs is generated once; with an
   empty decode cache ``load_dataset`` decodes every file (cold), the second ``load_dataset`` reads the cached
   array (warm, asserted through ``medclf.data.cache.STATS``: 0 decodes); one training epoch after each.
   Finally a tiny 2-fold x 2-epoch study (``run_study``) on the same folder, with a fresh cache, checks that a
   study decodes each image exactly once, whatever its number of folds and epochs.

``--compile`` and ``--precision bf16`` change both sides alike: medclf trains with ``training.compile: true`` /
``training.precision: bf16`` and the pure loop compiles its network / runs its forward pass and loss under bf16
autocast, so the ratio still compares like with like (the warm-up epoch, dropped, pays the compile; the folder
epochs train two epochs and time the second). Where medclf refuses the setting on this CPU (bf16 without bf16
instructions, compile without a C++ compiler) the script prints medclf's reason, records it and exits 0.

Usage::

    python benchmarks/throughput.py                 # ~7 minutes on an idle 2-core CPU
    python benchmarks/throughput.py --quick         # smoke check, ~15 s idle
    python benchmarks/throughput.py --wait-load 0.6 --out bench.json     # or --out DIR: throughput.json + .md
    python benchmarks/throughput.py --compile --out /tmp/bench-compile   # compile: minutes more
    python benchmarks/throughput.py --precision bf16 --out /tmp/bench-bf16

On a machine shared with other CPU-bound jobs, multi-threaded torch (GNU OpenMP's default active spin-wait)
can run many times slower than alone; ``OMP_WAIT_POLICY=PASSIVE python benchmarks/throughput.py`` keeps the
timings usable there (both paths are affected alike, so the ratios stay comparable).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    LoadSampler,
    cpu_bf16_refusal,
    ips,
    load1,
    machine_info,
    machine_line,
    med,
    wait_for_quiet,
    warn_if_loaded,
    write_results,
)
from torch import nn

from medclf.config import ModelConfig, TrainingConfig, parse_config
from medclf.data import cache as decode_cache
from medclf.data import load_dataset
from medclf.data.augmentation import build_augmentation
from medclf.experiments.study import run_study
from medclf.models import build_model
from medclf.training import Callback, Trainer, batch_indices, resolve_runtime
from medclf.training.device import compiler_problem, torch_threads
from medclf.training.loop import _to_input

DEFAULT_MODELS = ["resnet18", "tf_efficientnet_lite0"]


def speed_keys(args: argparse.Namespace) -> dict[str, Any]:
    """The training keys ``--precision`` and ``--compile`` set, for every medclf fit and study of the run."""
    return {"precision": args.precision, "compile": args.compile}


def default_training(args: argparse.Namespace, **overrides: Any) -> TrainingConfig:
    """The default recipe (AdamW, one-cycle, label smoothing 0.1, hflip) on the CPU, at ``--precision`` and
    ``--compile``."""
    return TrainingConfig(**({"device": "cpu"} | speed_keys(args) | overrides))


# ------------------------------------------------------------------------------- 1. pure vs medclf's loop
class PureLoop:
    """The minimal training loop: batches already float, normalised and in the model's memory format."""

    def __init__(
        self, name: str, channels_last: bool, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
        total_steps: int, seed: int, cfg: TrainingConfig,
    ) -> None:
        """``cfg.compile`` compiles the network (its first epoch pays for it) and ``cfg.precision: bf16`` runs the
        forward pass and the loss under bf16 autocast, as medclf's ``train_step`` does: like compared with like."""
        from timm.optim import param_groups_weight_decay
        from torch.optim.lr_scheduler import OneCycleLR

        torch.manual_seed(seed)
        self.model = build_model(ModelConfig(name=name), in_chans=images.shape[1], n_classes=2)
        self.channels_last = channels_last
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model.to_channels_last()
        with torch.no_grad():  # the normalisation medclf does per batch, done once here
            x = self.model.norm(images.float().div_(255.0)).contiguous(memory_format=fmt)
        self.batches = [(x[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        assert all(xb.is_contiguous(memory_format=fmt) for xb, _ in self.batches)
        self.n_images = len(x)
        opt = cfg.optimizer
        self.optimizer = torch.optim.AdamW(
            param_groups_weight_decay(self.model, weight_decay=opt.weight_decay), lr=opt.lr, betas=opt.betas
        )
        self.scheduler = OneCycleLR(
            self.optimizer, max_lr=[g["lr"] for g in self.optimizer.param_groups], total_steps=total_steps,
            pct_start=cfg.scheduler.pct_start,
        )
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)
        self.autocast_dtype = torch.bfloat16 if cfg.precision == "bf16" else None
        if cfg.compile:  # in place, as medclf compiles its Classifier; the net alone, as its input is ready here
            self.model.net.compile()

    def epoch(self) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of one pass over the batches."""
        net, optimizer, scheduler, loss_fn = self.model.net, self.optimizer, self.scheduler, self.loss_fn
        self.model.train()
        start, cpu_start = time.perf_counter(), time.process_time()
        for xb, yb in self.batches:
            with torch.autocast("cpu", dtype=self.autocast_dtype or torch.bfloat16, enabled=bool(self.autocast_dtype)):
                loss = loss_fn(net(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        return time.perf_counter() - start, time.process_time() - cpu_start


class Interleave(Callback):
    """After each medclf epoch (its ``time_s`` already taken), run one epoch of every pure loop.

    Also records the CPU time (all threads of the process) of every epoch: on a machine shared with other jobs
    CPU time varies much less than wall time, which gives a second, sharing-robust ratio.
    """

    def __init__(self, pures: list[PureLoop]) -> None:
        self.pures = pures
        self.times: dict[bool, list[float]] = {p.channels_last: [] for p in pures}
        self.cpu_times: dict[bool, list[float]] = {p.channels_last: [] for p in pures}
        self.medclf_cpu: list[float] = []
        self._cpu_start = 0.0

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self._cpu_start = time.process_time()  # a few microseconds inside medclf's time_s

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        self.medclf_cpu.append(time.process_time() - self._cpu_start)
        order = self.pures if epoch % 2 else self.pures[::-1]  # alternate which format runs first
        for pure in order:
            wall, cpu = pure.epoch()
            self.times[pure.channels_last].append(wall)
            self.cpu_times[pure.channels_last].append(cpu)
        print(
            f"    epoch {epoch}: medclf {logs['time_s']:.2f} s (cpu {self.medclf_cpu[-1]:.2f}), "
            + ", ".join(f"pure {'NHWC' if cl else 'NCHW'} {t[-1]:.2f} s (cpu {self.cpu_times[cl][-1]:.2f})"
                        for cl, t in self.times.items()),
            f"load {load1()}",
            flush=True,
        )


def bench_loop(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved epochs of medclf's Trainer and of the pure loop in both memory formats."""
    n = args.steps * args.batch_size
    epochs = args.repeats + 1  # the first is a warm-up
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, args.size, args.size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    cfg = default_training(args, epochs=epochs, batch_size=args.batch_size, num_threads=args.threads)

    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), in_chans=3, n_classes=2)
    auto_cl = resolve_runtime(cfg, model).channels_last
    total_steps = epochs * len(batch_indices(n, args.batch_size, generator=torch.Generator()))
    pures = [
        PureLoop(name, cl, images, labels, batch_size=args.batch_size, total_steps=total_steps, seed=0, cfg=cfg)
        for cl in (auto_cl, not auto_cl)
    ]
    interleave = Interleave(pures)
    trainer = Trainer(model, cfg, class_names=["a", "b"], seed=0, callbacks=[interleave])
    print(f"  {name}: {epochs} epochs x {args.steps} steps x batch {args.batch_size} at {args.size} px "
          f"(medclf channels_last={auto_cl})", flush=True)
    load_before = load1()
    fit = trainer.fit(images, labels, images[:0], labels[:0])
    assert trainer.runtime.channels_last == auto_cl
    assert not any(k.startswith("val_") for h in fit.history for k in h), "validation ran"

    medclf_s = [h["time_s"] for h in fit.history][1:]
    pure_auto_s = interleave.times[auto_cl][1:]
    pure_other_s = interleave.times[not auto_cl][1:]
    medclf_ips, pure_ips = ips(n, med(medclf_s)), ips(n, med(pure_auto_s))
    other_ips = ips(n, med(pure_other_s))
    cl_ips, cf_ips = (pure_ips, other_ips) if auto_cl else (other_ips, pure_ips)
    cpu = {"medclf": interleave.medclf_cpu[1:], "pure": interleave.cpu_times[auto_cl][1:],
           "pure_other_format": interleave.cpu_times[not auto_cl][1:]}
    cl_cpu, cf_cpu = (cpu["pure"], cpu["pure_other_format"]) if auto_cl else (cpu["pure_other_format"], cpu["pure"])
    return {
        "model": name,
        "image_size": args.size,
        "batch_size": args.batch_size,
        "steps_per_epoch": args.steps,
        "measured_epochs": args.repeats,
        "medclf_channels_last": auto_cl,
        "epoch_s": {"medclf": medclf_s, "pure": pure_auto_s, "pure_other_format": pure_other_s},
        "medclf_ips": medclf_ips,
        "pure_ips": pure_ips,
        "ratio": medclf_ips / pure_ips,
        "paired_ratios": [p / m for m, p in zip(medclf_s, pure_auto_s)],
        "pure_channels_last_ips": cl_ips,
        "pure_contiguous_ips": cf_ips,
        "channels_last_speedup": cl_ips / cf_ips,
        "cpu_s": cpu,
        "cpu_ratio": med(cpu["pure"]) / med(cpu["medclf"]),
        "cpu_channels_last_speedup": med(cf_cpu) / med(cl_cpu),
        "load_avg": [load_before, load1()],
    }


# --------------------------------------------------------------------------- 2. input pipeline per batch
def bench_pipeline(name: str, args: argparse.Namespace, n_batches: int) -> dict[str, float]:
    """Median milliseconds per batch of each step medclf adds before the network (no autograd involved)."""
    n = max(args.steps, 4) * args.batch_size
    images = torch.randint(0, 256, (n, 3, args.size, args.size), dtype=torch.uint8)
    cfg = default_training(args, batch_size=args.batch_size)
    model = build_model(ModelConfig(name=name), in_chans=3, n_classes=2)
    runtime = resolve_runtime(cfg, model)
    if runtime.channels_last:
        model.to_channels_last()
    augment = build_augmentation(cfg.augmentation.presets)
    generator = torch.Generator().manual_seed(0)
    parts: dict[str, list[float]] = {"gather": [], "hflip": [], "to_float": [], "norm": [], "memory_format": []}
    for _ in range(n_batches):
        idx = torch.randperm(n, generator=generator)[: args.batch_size]
        t0 = time.perf_counter()
        x = images[idx]
        t1 = time.perf_counter()
        x = augment(x, generator)
        t2 = time.perf_counter()
        x = _to_input(x, runtime)
        t3 = time.perf_counter()
        x = model.norm(x)
        t4 = time.perf_counter()
        x = x.contiguous(memory_format=model.memory_format)
        t5 = time.perf_counter()
        for key, a, b in zip(parts, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
            parts[key].append((b - a) * 1e3)
    out = {key: med(v) for key, v in parts.items()}
    out["total"] = sum(out.values())
    return out


# --------------------------------------------------------------------------------- 3. cold vs warm folder
def make_folder(root: Path, n_images: int, size: int = 256) -> tuple[Path, float]:
    """A class-per-folder tree of ``n_images`` JPEGs (noise + a circle or a square); made once per root."""
    from PIL import Image, ImageDraw

    folder = root / f"folder-{n_images}-{size}px"
    marker = folder / ".complete"
    if marker.exists():
        return folder, 0.0
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    for i in range(n_images):
        cls = ("circle", "square")[i % 2]
        (folder / cls).mkdir(parents=True, exist_ok=True)
        noise = rng.normal(110, 40, (size, size, 1)) + rng.normal(0, 15, (size, size, 3))
        img = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        r = int(rng.integers(size // 8, size // 3))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        fill = tuple(int(v) for v in rng.integers(150, 256, 3))
        (draw.ellipse if cls == "circle" else draw.rectangle)((cx - r, cy - r, cx + r, cy + r), fill=fill)
        img.save(folder / cls / f"{i:05d}.jpg", quality=90)
    marker.write_text(str(n_images))
    return folder, time.perf_counter() - start


def one_epoch(
    images: np.ndarray, labels: np.ndarray, args: argparse.Namespace, *, max_images: int | None = None
) -> float:
    """Seconds of one default-recipe training epoch of a fresh (seeded) model on ``images``.

    With ``--compile`` the fresh model compiles in its first epoch: it trains two and the second is timed, so the
    cold/warm comparison stays about the data, not the compiler.
    """
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    if max_images is not None:
        x, y = x[:max_images], y[:max_images]
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=args.folder_model), in_chans=x.shape[1], n_classes=2)
    cfg = default_training(args, epochs=2 if args.compile else 1, batch_size=args.batch_size, num_threads=args.threads)
    fit = Trainer(model, cfg, class_names=["a", "b"], seed=0).fit(x, y, x[:0], y[:0])
    return fit.history[-1]["time_s"]


def bench_folder(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    folder, gen_s = make_folder(workdir, args.images)
    n_bytes = sum(p.stat().st_size for p in folder.rglob("*.jpg"))
    print(f"  folder {folder} ({args.images} JPEGs, {n_bytes / 2**20:.1f} MiB"
          + (f", generated in {gen_s:.1f} s)" if gen_s else ", reused)"), flush=True)
    cache_dir = Path(tempfile.mkdtemp(prefix="cache-", dir=workdir))
    data_cfg = parse_config({
        "data": {"source": {"type": "folder", "path": str(folder)}, "image_size": args.size, "channels": 3,
                 "cache_dir": str(cache_dir)},
    }).data
    stats = decode_cache.STATS
    load_before = load1()

    # warm up the kernels on a few batches so that neither timed epoch pays the first-call costs
    warm_n = 4 * args.batch_size
    g = np.random.default_rng(0)
    one_epoch(g.integers(0, 256, (warm_n, 3, args.size, args.size), dtype=np.uint8),
              np.arange(warm_n) % 2, args)

    def load_then_epoch(label: str) -> tuple:
        """Time one load_dataset (with its decode counters) and one training epoch on what it loaded."""
        stats.reset()
        t0 = time.perf_counter()
        loaded = load_dataset(data_cfg)
        load_s = time.perf_counter() - t0
        counters = dict(vars(stats))
        epoch_s = one_epoch(loaded.images, loaded.labels, args)
        print(f"    {label}: load {load_s:.2f} s ({counters['n_decoded']} decoded), epoch {epoch_s:.2f} s", flush=True)
        return loaded, load_s, counters, epoch_s

    cold, cold_load_s, cold_stats, cold_epoch_s = load_then_epoch("cold")
    warm, warm_load_s, warm_stats, warm_epoch_s = load_then_epoch("warm")
    assert cold_stats["n_decoded"] == args.images and cold_stats["n_misses"] == 1, cold_stats
    assert warm_stats["n_decoded"] == 0 and warm_stats["n_hits"] == 1, warm_stats
    assert np.array_equal(cold.images, warm.images) and cold.fingerprint == warm.fingerprint

    study = bench_study(folder, workdir, args)
    shutil.rmtree(cache_dir, ignore_errors=True)
    n = args.images
    return {
        "n_images": n,
        "jpeg_size_px": 256,
        "jpeg_mib": round(n_bytes / 2**20, 2),
        "image_size": args.size,
        "model": args.folder_model,
        "cold": {"load_s": cold_load_s, "epoch_s": cold_epoch_s, "total_s": cold_load_s + cold_epoch_s,
                 "stats": cold_stats, "decode_ips": ips(n, cold_load_s), "train_ips": ips(n, cold_epoch_s)},
        "warm": {"load_s": warm_load_s, "epoch_s": warm_epoch_s, "total_s": warm_load_s + warm_epoch_s,
                 "stats": warm_stats, "train_ips": ips(n, warm_epoch_s)},
        "study": study,
        "load_avg": [load_before, load1()],
    }


def bench_study(folder: Path, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A 2-fold x 2-epoch study on the folder with a fresh cache: each image must be decoded exactly once."""
    cache_dir = Path(tempfile.mkdtemp(prefix="study-cache-", dir=workdir))
    out = Path(tempfile.mkdtemp(prefix="study-run-", dir=workdir))
    config = parse_config({
        "name": "bench",
        "data": {"source": {"type": "folder", "path": str(folder)}, "image_size": args.study_size, "channels": 3,
                 "cache_dir": str(cache_dir)},
        "model": {"name": args.folder_model},
        "training": {"epochs": 2, "batch_size": args.batch_size, "device": "cpu", "num_threads": args.threads}
        | speed_keys(args),
        "cv": {"n_folds": 2},
    })
    decode_cache.STATS.reset()
    start = time.perf_counter()
    run_study(config, out, overwrite=True)
    seconds = time.perf_counter() - start
    stats = dict(vars(decode_cache.STATS))
    shutil.rmtree(cache_dir, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    assert stats["n_decoded"] == args.images and stats["n_misses"] + stats["n_hits"] == 1, stats
    print(f"    study (2 folds x 2 epochs at {args.study_size} px): {stats['n_decoded']} decodes, "
          f"{stats['n_misses'] + stats['n_hits']} load, {seconds:.1f} s", flush=True)
    return {"folds": 2, "epochs": 2, "image_size": args.study_size, "seconds": seconds, "stats": stats}


# ------------------------------------------------------------------------------------------------- report
def markdown(results: dict[str, Any]) -> str:
    lines = []
    loops = results.get("loop", [])
    if loops:
        r0 = loops[0]
        lines += [
            f"Training throughput, {results['precision_label']} CPU, {r0['image_size']} px, batch {r0['batch_size']}, "
            f"{r0['steps_per_epoch']} steps/epoch, median of {r0['measured_epochs']} epochs after a warm-up:",
            "",
            "| model | memory format (medclf auto) | pure images/s | medclf images/s | medclf / pure "
            "| per-epoch ratios | medclf / pure by CPU time |",
            "|---|---|---:|---:|---:|---|---:|",
        ]
        for r in loops:
            fmt = "channels_last" if r["medclf_channels_last"] else "contiguous"
            paired = ", ".join(f"{x:.2f}" for x in r["paired_ratios"])
            lines.append(f"| {r['model']} | {fmt} | {r['pure_ips']:.1f} | {r['medclf_ips']:.1f} | {r['ratio']:.3f} "
                         f"| {paired} | {r['cpu_ratio']:.3f} |")
        lines += [
            "",
            "Pure compute, channels_last on vs off:",
            "",
            "| model | contiguous images/s | channels_last images/s | channels_last speed-up | by CPU time |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in loops:
            lines.append(f"| {r['model']} | {r['pure_contiguous_ips']:.1f} | {r['pure_channels_last_ips']:.1f} "
                         f"| {r['channels_last_speedup']:.2f}x | {r['cpu_channels_last_speedup']:.2f}x |")
    pipes = results.get("pipeline", {})
    if pipes:
        lines += [
            "",
            "medclf's input pipeline, median ms per batch (outside autograd):",
            "",
            "| model | gather | hflip | uint8->float | normalise | memory format | total |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, p in pipes.items():
            lines.append(f"| {name} | {p['gather']:.2f} | {p['hflip']:.2f} | {p['to_float']:.2f} | {p['norm']:.2f} "
                         f"| {p['memory_format']:.2f} | {p['total']:.2f} |")
    f = results.get("folder")
    if f:
        c, w, s = f["cold"], f["warm"], f["study"]
        lines += [
            "",
            f"Image folder: {f['n_images']} JPEGs ({f['jpeg_size_px']} px, {f['jpeg_mib']} MiB) -> "
            f"{f['image_size']} px RGB, one epoch of {f['model']}:",
            "",
            "| | load_dataset (s) | files decoded | epoch (s) | load + epoch (s) |",
            "|---|---:|---:|---:|---:|",
            f"| cold (empty cache) | {c['load_s']:.2f} | {c['stats']['n_decoded']} | {c['epoch_s']:.2f} "
            f"| {c['total_s']:.2f} |",
            f"| warm (cache hit) | {w['load_s']:.2f} | {w['stats']['n_decoded']} | {w['epoch_s']:.2f} "
            f"| {w['total_s']:.2f} |",
            "",
            f"Study check ({s['folds']} folds x {s['epochs']} epochs at {s['image_size']} px, fresh cache): "
            f"{s['stats']['n_decoded']} files decoded for {f['n_images']} images, "
            f"{s['stats']['n_misses'] + s['stats']['n_hits']} load_dataset call.",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="timm architectures (default: %(default)s)")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default 128; --quick 64)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 32; --quick 8)")
    p.add_argument("--steps", type=int, default=None, help="steps (batches) per epoch (default 20; --quick 3)")
    p.add_argument("--repeats", type=int, default=None, help="measured epochs after the warm-up (default 3; --quick 2)")
    p.add_argument("--images", type=int, default=None, help="JPEGs in the folder benchmark (default 2000; --quick 64)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default %(default)s)")
    p.add_argument("--folder-model", default="resnet18", help="model of the folder epochs (default %(default)s)")
    p.add_argument("--study-size", type=int, default=32, help="image size of the study check (default %(default)s)")
    p.add_argument("--workdir", type=Path, default=None, help="where the JPEG folder is made (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None,
                   help="a folder for throughput.json and throughput.md, or a .json file (the .md beside it)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="fp32, or bf16 autocast in medclf and in the pure loop (refused, exit 0, on a CPU "
                        "without bf16 instructions)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model in medclf (training.compile) and the network in the pure loop; "
                        "the warm-up epoch pays the compile")
    p.add_argument("--skip-loop", action="store_true", help="skip the pure-vs-medclf measurement")
    p.add_argument("--skip-folder", action="store_true", help="skip the folder (cold/warm) measurement")
    p.add_argument("--wait-load", type=float, default=None, metavar="LOAD",
                   help="first wait until the 1-minute load average is below LOAD (polls every 30 s)")
    p.add_argument("--wait-max", type=float, default=1500, help="give up waiting after this many seconds")
    p.add_argument("--quick", action="store_true", help="everything tiny: a smoke check in under a minute")
    args = p.parse_args(argv)
    small = args.quick
    for key, full, quick in (("size", 128, 64), ("batch_size", 32, 8), ("steps", 20, 3), ("repeats", 3, 2),
                             ("images", 2000, 64)):
        if getattr(args, key) is None:
            setattr(args, key, quick if small else full)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                               "precision_label": args.precision + (" + torch.compile" if args.compile else "")}
    if refusal := refused(args):
        # a refused setting is a result too: the lead's full run records it instead of failing
        print(f"skipped: {refusal}", flush=True)
        results["skipped"] = refusal
        for path in write_results(args.out, "throughput", results, f"Skipped: {refusal}"):
            print(f"wrote {path}")
        return 0
    if args.wait_load is not None:
        results["wait"] = wait_for_quiet(args.wait_load, args.wait_max)
    with torch_threads(args.threads):
        results["machine"]["torch_threads"] = torch.get_num_threads()
        results["load_avg_start"] = list(os.getloadavg())
        warn_if_loaded(results["load_avg_start"][0])
        start = time.perf_counter()
        with LoadSampler() as sampler:
            measure(args, results)
    results["load_avg_during"] = sampler.summary()
    results["load_avg_end"] = list(os.getloadavg())
    results["wall_s"] = time.perf_counter() - start
    load = results["load_avg_during"]
    header = (f"{machine_line(results['machine'])}, OMP_WAIT_POLICY {results['machine']['omp_wait_policy']}; "
              f"1-minute load average {results['load_avg_start'][0]:.2f} at start, {load['median']:.2f} median during "
              f"the run (max {load['max']:.2f}); {results['wall_s']:.0f} s")
    table = markdown(results)
    print(f"\n{header}\n\n{table}")
    for path in write_results(args.out, "throughput", results, f"{header}\n\n{table}"):
        print(f"wrote {path}")
    return 0


def refused(args: argparse.Namespace) -> str | None:
    """Why this CPU cannot run ``--precision``/``--compile`` as medclf would (medclf's own reason), or None."""
    if args.precision == "bf16" and (problem := cpu_bf16_refusal()):
        return f"--precision bf16: training.precision {problem}."
    if args.compile and (problem := compiler_problem()):
        return f"--compile: training.compile {problem}."
    return None


def measure(args: argparse.Namespace, results: dict[str, Any]) -> None:
    if not args.skip_loop:
        print("pure compute vs medclf's Trainer:", flush=True)
        results["loop"] = [bench_loop(name, args) for name in args.models]
        results["pipeline"] = {name: bench_pipeline(name, args, n_batches=10 if args.quick else 50)
                               for name in args.models}
    if not args.skip_folder:
        print("cold vs warm epoch over an image folder:", flush=True)
        own_workdir = args.workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="medclf-bench-")) if own_workdir else args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            results["folder"] = bench_folder(args, workdir)
        finally:
            if own_workdir:
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
