#!/usr/bin/env python
"""Training throughput on a GPU: medclf's Trainer against pure compute on the same device (run by hand).

For each model (default ResNet-18 and EfficientNet-Lite0) at 224 px with autocast (``--precision auto``: bf16
where the GPU supports it, else fp16 with a GradScaler), images/second of

* *pure*: a minimal loop over batches made once, up front, **on the device**: float, normalised by the model's own
  ``InputNorm``, in the memory format medclf picks (channels_last on CUDA). ``model.net(x)`` under the same
  autocast, cross-entropy with medclf's label smoothing, ``zero_grad``, (scaled) ``backward``, the optimizer and
  one-cycle schedule medclf builds (``build_optimizer``/``build_scheduler``: the same parameter groups and
  steps). No data path at all: the ceiling;
* *medclf*: ``Trainer(...).fit(uint8_images, labels, empty, empty)``, default recipe (AdamW, one-cycle, label
  smoothing 0.1, hflip augmentation), on a uint8 set in host RAM, through each feed asked for with ``--feeds``
  (``resident``: the uint8 set copied to the GPU once per fit; ``pinned``: batches gathered into a reused pinned
  buffer and copied asynchronously, the path of sets too large for the GPU; ``auto``: what medclf picks).

The epochs are interleaved: after each medclf epoch (whose ``time_s`` is taken after the epoch's loss is read,
which waits for the GPU), one pure epoch runs between ``torch.cuda.synchronize()`` calls. The first epoch of
each path is a warm-up (cuDNN algorithm choice, allocator growth) and is dropped; images/s is from the median of
the others. The ratio medclf / pure is the figure of issue 18 (target: >= 0.85).

Usage::

    python benchmarks/gpu_throughput.py                      # both models, both feeds: about 2-3 min on an H200
    python benchmarks/gpu_throughput.py --quick              # small smoke run on the GPU, under a minute
    python benchmarks/gpu_throughput.py --device cpu --quick --size 32 --models resnet18   # the script itself, here
    python benchmarks/gpu_throughput.py --out gpu.json       # also write the figures as JSON
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

import medclf
from medclf.config import ModelConfig, TrainingConfig
from medclf.models import build_model
from medclf.training import Callback, Trainer, loop, resolve_runtime
from medclf.training.feeding import make_feed
from medclf.training.optimizers import build_optimizer
from medclf.training.schedulers import build_scheduler

DEFAULT_MODELS = ["resnet18", "tf_efficientnet_lite0"]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_info(device: torch.device) -> dict[str, Any]:
    import timm

    info: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "medclf": medclf.__version__,
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                 "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                 "bf16_supported": torch.cuda.is_bf16_supported()}
    return info


class PureLoop:
    """The minimal training loop on device-resident float batches (the ceiling the medclf loop is held to)."""

    def __init__(self, name: str, images: torch.Tensor, labels: torch.Tensor, cfg: TrainingConfig, *,
                 total_steps: int) -> None:
        torch.manual_seed(0)
        self.model = build_model(ModelConfig(name=name), in_chans=images.shape[1], n_classes=2)
        self.runtime = runtime = resolve_runtime(cfg, self.model)
        self.device = runtime.device
        self.model.to(self.device)
        if runtime.channels_last:
            self.model.to_channels_last()
        fmt = torch.channels_last if runtime.channels_last else torch.contiguous_format
        batches = []
        with torch.no_grad():  # the uint8 -> float, normalisation and layout medclf does per batch, done once here
            for xb, yb in zip(images.split(cfg.batch_size), labels.split(cfg.batch_size)):
                x = self.model.norm(xb.to(self.device).float().div_(255.0)).contiguous(memory_format=fmt)
                batches.append((x, yb.to(self.device)))
        self.batches = batches
        self.n_images = len(images)
        self.optimizer = build_optimizer(self.model, cfg.optimizer)
        self.schedule = build_scheduler(self.optimizer, cfg.scheduler, epochs=1, steps_per_epoch=total_steps,
                                        monitor=cfg.monitor, mode="min")
        self.scaler = torch.amp.GradScaler(enabled=runtime.amp_dtype == torch.float16)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.loss.label_smoothing)

    def epoch(self) -> float:
        """Wall seconds of one pass over the batches, the GPU's work included."""
        net, optimizer, scaler = self.model.net, self.optimizer, self.scaler
        self.model.train()
        sync(self.device)
        start = time.perf_counter()
        for xb, yb in self.batches:
            with self.runtime.autocast():
                loss = self.loss_fn(net(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            self.schedule.after_batch()
        sync(self.device)
        return time.perf_counter() - start


class Interleave(Callback):
    """After each medclf epoch (its ``time_s`` already taken), one epoch of the pure loop."""

    def __init__(self, pure: PureLoop) -> None:
        self.pure = pure
        self.times: list[float] = []

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        self.times.append(self.pure.epoch())
        print(f"    epoch {epoch}: medclf {logs['time_s']:.3f} s, pure {self.times[-1]:.3f} s", flush=True)


@contextlib.contextmanager
def feed_as(kind: str, record: dict[str, Any]) -> Iterator[None]:
    """Make the Trainer's feed ``kind`` (``auto``: medclf's own choice), recording the kind and its set-up time."""
    real = loop.make_feed

    def timed(rows: Any, runtime: Any) -> Any:
        start = time.perf_counter()
        feed = make_feed(rows, runtime, kind=None if kind == "auto" else kind)
        sync(runtime.device)
        record.update(feed=feed.kind, feed_setup_s=round(time.perf_counter() - start, 3))
        return feed

    loop.make_feed = timed
    try:
        yield
    finally:
        loop.make_feed = real


def bench(name: str, feed: str, images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace) -> dict:
    """Interleaved epochs of medclf's Trainer (through ``feed``) and the pure loop, for one model."""
    epochs = args.repeats + 1  # the first is a warm-up
    cfg = TrainingConfig(device=args.device, precision=args.precision, epochs=epochs, batch_size=args.batch_size)
    n_steps = len(images) // args.batch_size
    pure = PureLoop(name, images, labels, cfg, total_steps=epochs * n_steps)
    interleave = Interleave(pure)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), in_chans=images.shape[1], n_classes=2)
    trainer = Trainer(model, cfg, class_names=["a", "b"], seed=0, callbacks=[interleave])
    record: dict[str, Any] = {}
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    print(f"  {name}, feed {feed}: {epochs} epochs x {n_steps} steps x batch {args.batch_size} at {args.size} px",
          flush=True)
    with feed_as(feed, record):
        fit = trainer.fit(images, labels, images[:0], labels[:0])
    assert not any(k.startswith("val_") for h in fit.history for k in h), "validation ran"
    medclf_s, pure_s = [h["time_s"] for h in fit.history][1:], interleave.times[1:]
    n = n_steps * args.batch_size
    medclf_ips, pure_ips = n / med(medclf_s), n / med(pure_s)
    return {
        "model": name, "feed_asked": feed, **record, "image_size": args.size, "batch_size": args.batch_size,
        "steps_per_epoch": n_steps, "measured_epochs": args.repeats, "runtime": fit.runtime,
        "epoch_s": {"medclf": medclf_s, "pure": pure_s},
        "medclf_ips": medclf_ips, "pure_ips": pure_ips, "ratio": medclf_ips / pure_ips,
        "paired_ratios": [p / m for m, p in zip(medclf_s, pure_s)],
        "peak_gpu_memory_gib": (round(torch.cuda.max_memory_allocated() / 2**30, 2)
                                if args.device == "cuda" else None),
    }


def markdown(results: list[dict], info: dict[str, Any]) -> str:
    lines = [
        f"Device: {info.get('gpu', info['device'])}; torch {info['torch']}, CUDA {info.get('cuda')}; "
        f"{info['date']}",
        "",
        "| model | precision | feed | pure images/s | medclf images/s | medclf / pure | per-epoch ratios | "
        "feed set-up (s) | peak GPU memory (GiB) |",
        "|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['runtime']['precision']} | {r['feed']} | {r['pure_ips']:.0f} | "
            f"{r['medclf_ips']:.0f} | **{r['ratio']:.2f}** | {', '.join(f'{x:.2f}' for x in r['paired_ratios'])} | "
            f"{r['feed_setup_s']} | {r['peak_gpu_memory_gib']} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--feeds", nargs="+", default=["resident", "pinned"], choices=["auto", "resident", "pinned"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="measured epochs after the warm-up epoch")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="batch 64, 5 steps, 2 measured epochs: a smoke run")
    parser.add_argument("--out", type=Path, help="write the figures and the machine as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.repeats = min(args.batch_size, 64), min(args.steps, 5), min(args.repeats, 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: this benchmark measures a GPU (--device cpu only checks that the script runs)",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    info = machine_info(device)
    print(json.dumps(info), flush=True)
    g = torch.Generator().manual_seed(0)
    n = args.steps * args.batch_size
    images = torch.randint(0, 256, (n, 3, args.size, args.size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    results = []
    for name in args.models:
        for feed in args.feeds:
            results.append(bench(name, feed, images, labels, args))
            print(markdown(results, info).splitlines()[-1], flush=True)  # each row as it comes (a run cut short)
    table = markdown(results, info)
    print("\n" + table, flush=True)
    if args.out:
        args.out.write_text(json.dumps({"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                                        "results": results, "markdown": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
