#!/usr/bin/env python
"""Out-of-core training benchmark: memory-mapped vs in-RAM images (run by hand; never by the tests).

Issue 18, requirement 1: a run's resident memory must not grow with the data set when the decoded images are
read memory-mapped from their ``.npy``. For synthetic sets of 2k, 20k and 100k images (128 px, uint8, written
in chunks through ``np.lib.format.open_memmap``), and for each of two paths

* *ram*: ``np.load(path)``, the whole set in anonymous memory (what a study did before issue 18);
* *mmap*: ``np.load(path, mmap_mode="r")``, pages read on demand into the page cache,

a FRESH subprocess fits ``medclf.training.Trainer`` on ``medclf.data.rows.Rows(array, index=subset)``, where
``subset`` is a fixed number of positions (``--per-epoch``, default 512) drawn at random over the WHOLE set: an
epoch always trains the same number of images, so throughput is comparable across sizes, while every batch
gathers rows scattered over the full file (the fit's shuffle is the trainer's own true shuffle). The epochs are

1. a warm-up, untimed (first-touch costs, allocator, one-time initialisation);
2. *cold*: before it, this file's pages are dropped from the page cache (``madvise(MADV_DONTNEED)`` on the
   process's own map, then ``posix_fadvise(POSIX_FADV_DONTNEED)`` on the ``.npy``; ``fincore`` checks what is
   left). This drops THIS FILE's cached pages only, with no root rights: it is not ``echo 3 >
   /proc/sys/vm/drop_caches``, and a virtual disk may still be served from the host's own cache;
3. ``--warm-epochs`` *warm* epochs (median reported, in images per second of wall time and per second of the
   process's CPU time, which neighbours on shared cores distort less).

After the fit, the gather alone (``Rows.take`` over the subset in shuffled batches, no compute) is timed once
after the same page-cache drop and once warm: the I/O cost per image, which a busy CPU hardly distorts.

The in-RAM path reads the whole file when it loads it: its cold cost is the load (timed after the same drop of
the page cache), not the epoch. A sampler thread in the subprocess reads ``/proc/self/status`` every 50 ms and
keeps the peaks of ``RssAnon`` (anonymous memory: what the target is about) and ``RssFile`` (file-backed pages,
mapped shared libraries included; reclaimable page cache, reported separately).

Throughput on a shared machine is noisy; RSS is not. The runs are therefore interleaved (each round runs every
size with both paths, alternating which path goes first) and repeated ``--rounds`` times; the 1-minute load
average is sampled throughout and reported.

Usage::

    python benchmarks/out_of_core.py                     # ~12 min on an idle 2-core CPU, 1.7 GB of /tmp
    python benchmarks/out_of_core.py --quick             # smoke check, ~1 min
    python benchmarks/out_of_core.py --wait-load 0.6 --dir /tmp/ooc --out ooc.json --markdown ooc.md
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

PATHS = ("ram", "mmap")
LABELS = "labels.npy"


# ------------------------------------------------------------------------------------------------ the data
def images_path(folder: Path, n: int, *, channels: int, size: int) -> Path:
    return folder / f"images-{n}x{channels}x{size}x{size}.npy"


def write_synthetic(path: Path, n: int, *, channels: int, size: int, seed: int, chunk: int = 1024) -> np.ndarray:
    """Write ``n`` random uint8 images (N, C, S, S) to ``path`` in chunks; returns the labels (N,) int64.

    Noise, plus a bright square on label-1 images: cheap to make, something to learn, never the whole set in
    memory. An existing file of the same shape (a rerun with ``--dir``) is kept.
    """
    labels_file = path.with_name(path.stem + "-" + LABELS)
    shape = (n, channels, size, size)
    if path.exists() and labels_file.exists():
        existing = np.load(path, mmap_mode="r")
        if existing.shape == shape and existing.dtype == np.uint8:
            return np.load(labels_file)
        del existing
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    side = size // 4
    axis = np.arange(size)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        m = stop - start
        x = rng.integers(0, 96, size=(m, channels, size, size), dtype=np.uint8)
        top, left = rng.integers(0, size - side, size=(2, m))
        in_rows = (axis >= top[:, None]) & (axis < top[:, None] + side)
        in_cols = (axis >= left[:, None]) & (axis < left[:, None] + side)
        square = in_rows[:, :, None] & in_cols[:, None, :] & (labels[start:stop] == 1)[:, None, None]
        x += (square[:, None] * np.uint8(128)).astype(np.uint8)
        out[start:stop] = x
    out.flush()
    del out
    with open(path, "rb") as handle:  # written back, so the later page-cache drop can actually drop it
        os.fsync(handle.fileno())
    np.save(labels_file, labels)
    return labels


def drop_page_cache(path: Path, array: np.ndarray | None = None) -> None:
    """Drop ``path``'s pages from the page cache (this file only; no root needed).

    ``posix_fadvise(DONTNEED)`` skips pages that a process still maps, so a memory-mapped ``array`` first
    unmaps its pages from this process (``MADV_DONTNEED`` on a read-only shared file map only drops the page
    table entries; the next access faults the data back in from the file).
    """
    base = array
    while base is not None and not hasattr(base, "_mmap"):
        base = getattr(base, "base", None)
    if base is not None and getattr(base, "_mmap", None) is not None:
        base._mmap.madvise(mmap.MADV_DONTNEED)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_mb(path: Path) -> float | None:
    """MB of ``path`` in the page cache (util-linux ``fincore``), or None where it is not installed."""
    if shutil.which("fincore") is None:
        return None
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=False)
    return int(out.stdout.split()[0]) / 2**20 if out.returncode == 0 and out.stdout.strip() else None


# ------------------------------------------------------------------------------------- the memory sampler
def read_status() -> dict[str, float]:
    """RssAnon, RssFile, VmHWM of this process, MB."""
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB -> MB
    return values


class RssSampler:
    """Peak RssAnon and RssFile of this process, read from /proc/self/status every ``period_s`` by a thread."""

    def __init__(self, period_s: float = 0.05) -> None:
        self.peak = {"RssAnon": 0.0, "RssFile": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period_s,), daemon=True)

    def sample(self) -> dict[str, float]:
        now = read_status()
        for key in self.peak:
            self.peak[key] = max(self.peak[key], now[key])
        return now

    def _run(self, period_s: float) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(period_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# ------------------------------------------------------------------------------- one fit, in a subprocess
def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One fit on one path: load, warm-up epoch, cold epoch, warm epochs; RSS peaks and epoch times."""
    import torch

    from medclf.config import ModelConfig, TrainingConfig
    from medclf.data.rows import Rows
    from medclf.models import build_model
    from medclf.training import Callback, Trainer

    path = Path(spec["images"])
    with RssSampler() as sampler:
        baseline = sampler.sample()
        labels = np.load(spec["labels"])
        drop_page_cache(path)
        cached_before_load = cached_mb(path)
        start = time.perf_counter()
        array = np.load(path, mmap_mode="r" if spec["path"] == "mmap" else None)
        load_s = time.perf_counter() - start
        after_load = sampler.sample()
        n = len(array)
        subset = np.random.default_rng(spec["seed"]).choice(n, size=spec["per_epoch"], replace=False)
        train_x = Rows(array, index=subset)
        train_y = torch.from_numpy(labels[subset])
        empty = torch.zeros((0, *array.shape[1:]), dtype=torch.uint8)  # no validation: time_s is training only
        cache_after_drop: list[float | None] = []

        cpu_s: list[float] = []  # process CPU time (user + system: page faults included) per epoch

        class EpochProbe(Callback):
            def on_epoch_start(self, trainer: Any, epoch: int) -> None:
                cpu_s.append(time.process_time())

            # on_epoch_end runs after the loop took the epoch's time_s, so the drop is outside every timing
            def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, Any]) -> None:
                cpu_s[-1] = time.process_time() - cpu_s[-1]
                if epoch == 1:
                    drop_page_cache(path, array)
                    cache_after_drop.append(cached_mb(path))

        torch.manual_seed(spec["seed"])
        model = build_model(ModelConfig(name=spec["model"]), in_chans=int(array.shape[1]), n_classes=2)
        cfg = TrainingConfig(device="cpu", epochs=2 + spec["warm_epochs"], batch_size=spec["batch_size"],
                             num_threads=spec["threads"])
        trainer = Trainer(model, cfg, class_names=["a", "b"], seed=spec["seed"], callbacks=[EpochProbe()])
        fit = trainer.fit(train_x, train_y, empty, train_y[:0])
        # the gather alone, without compute: the I/O a cold page cache adds, measurable even on a busy CPU
        drop_page_cache(path, array)
        gather_cold_s = time_gather(train_x, spec["batch_size"], seed=spec["seed"])
        gather_warm_s = time_gather(train_x, spec["batch_size"], seed=spec["seed"] + 1)
    times = [h["time_s"] for h in fit.history]
    images = spec["per_epoch"]
    warm = [images / t for t in times[2:]]
    return {
        "n": n, "path": spec["path"], "round": spec["round"], "per_epoch": images, "load_s": load_s,
        "cached_mb_before_load": cached_before_load, "cached_mb_after_drop": cache_after_drop[0],
        "baseline_mb": baseline, "after_load_mb": after_load, "peak_mb": dict(sampler.peak),
        "vm_hwm_mb": read_status()["VmHWM"], "epoch_s": times, "ips_warm_epochs": warm,
        "ips_warm": statistics.median(warm), "ips_cold": images / times[1], "epoch_cpu_s": cpu_s,
        # images per CPU second: what neighbours on shared cores distort least
        "ips_warm_cpu": statistics.median(images / t for t in cpu_s[2:]),
        "train_loss": [h["train_loss"] for h in fit.history],
        "gather_cold_s": gather_cold_s, "gather_warm_s": gather_warm_s,
    }


def time_gather(rows: Any, batch_size: int, *, seed: int) -> float:
    """Seconds to gather every row of ``rows`` once, in shuffled batches, as the fit loop does."""
    order = np.random.default_rng(seed).permutation(len(rows))
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        rows.take(order[i : i + batch_size])
    return time.perf_counter() - start


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter, so every measurement starts from an empty process."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the {spec['path']} fit on {spec['images']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------- end to end: `medclf run` on a PNG tree
def write_png_tree(root: Path, n: int, *, size: int, seed: int) -> None:
    """``n`` grayscale PNGs in root/{train,test}/{plain,square}/ (a fifth in test); kept when already there."""
    from PIL import Image

    if root.exists() and sum(1 for _ in root.rglob("*.png")) == n:
        return
    rng = np.random.default_rng(seed)
    side = size // 4
    for i in range(n):
        split = "test" if i % 5 == 0 else "train"
        label = int(rng.integers(0, 2))
        # a flat background plus faint noise: every image distinct (no duplicate groups for the audit)
        image = (rng.integers(40, 90) + rng.integers(0, 24, size=(size, size))).astype(np.uint8)
        if label:
            top, left = rng.integers(0, size - side, size=2)
            image[top : top + side, left : left + side] = 220
        folder = root / split / ("square" if label else "plain")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:06d}.png", compress_level=1)


def peak_rss_of(command: list[str], period_s: float = 0.05) -> dict[str, Any]:
    """Run ``command``; its peak RssAnon/RssFile (MB), sampled from /proc/PID/status, its exit code and wall time."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"RssAnon": 0.0, "RssFile": 0.0}
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as handle:
                for line in handle:
                    key, _, rest = line.partition(":")
                    if key in peak:
                        peak[key] = max(peak[key], int(rest.split()[0]) / 1024)
        except (FileNotFoundError, ProcessLookupError, ValueError):  # exited between poll and open
            pass
        time.sleep(period_s)
    output = proc.stdout.read() if proc.stdout else ""
    return {"rc": proc.returncode, "wall_s": time.perf_counter() - start, "peak_mb": peak, "output": output[-2000:]}


def bench_e2e(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """``medclf run --folds 0`` (1 epoch) on a PNG tree: mmap on a cold decode cache (the out-of-core miss),
    then ram and mmap on the warm cache; the peak RssAnon of each whole run (decode, audit, fit, scoring)."""
    from medclf.atomic import atomic_write_text

    root, cache = folder / f"pngs-{args.e2e_pngs}", folder / "e2e-cache"
    start = time.perf_counter()
    write_png_tree(root, args.e2e_pngs, size=args.size, seed=args.seed)
    print(f"PNG tree of {args.e2e_pngs:,} images: {root} ({time.perf_counter() - start:.0f} s)", flush=True)
    shutil.rmtree(cache, ignore_errors=True)
    # a two-layer CNN with a stride-4 stem: training costs little, so the data path is what the run exercises
    config = {
        "name": "out_of_core_e2e", "seed": args.seed,
        "data": {"source": {"type": "splits", "path": str(root)}, "image_size": args.size, "channels": 1,
                 "cache_dir": str(cache)},
        "model": {"name": "layers", "layers": [{"type": "conv", "filters": 8, "kernel": 3, "stride": 4},
                                               {"type": "globalpool"}]},
        "training": {"epochs": 1, "batch_size": args.batch_size, "device": "cpu", "num_threads": args.threads},
        "cv": {"n_folds": 2},
    }
    config_path = folder / "e2e.yaml"
    atomic_write_text(config_path, json.dumps(config))  # JSON is YAML
    runs = []
    for memory, cache_state in (("mmap", "cold (decodes)"), ("ram", "warm"), ("mmap", "warm")):
        out = folder / f"e2e-run-{memory}"
        command = [sys.executable, "-m", "medclf", "run", str(config_path), "--out", str(out), "--overwrite",
                   "--quiet", "--folds", "0", "-o", f"data.memory={memory}"]
        r = peak_rss_of(command) | {"memory": memory, "cache": cache_state}
        shutil.rmtree(out, ignore_errors=True)
        if r["rc"] != 0:
            raise RuntimeError(f"medclf run with data.memory={memory} failed:\n{r['output']}")
        runs.append(r)
        print(f"  medclf run, data.memory={memory}, {cache_state} cache: RssAnon {r['peak_mb']['RssAnon']:.0f} MB, "
              f"RssFile {r['peak_mb']['RssFile']:.0f} MB, {r['wall_s']:.0f} s", flush=True)
    return runs


# ------------------------------------------------------------------------------------------------- report
def summarise(runs: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """Per (size, path): max RSS peaks over rounds, median images/s; the ratios the issue's targets name."""
    rows = []
    for n in sizes:
        for path in PATHS:
            mine = [r for r in runs if r["n"] == n and r["path"] == path]
            rows.append({
                "n": n, "path": path, "rounds": len(mine),
                "load_s": statistics.median(r["load_s"] for r in mine),
                "rss_anon_mb": max(r["peak_mb"]["RssAnon"] for r in mine),
                # once the set is loaded, before the fit's own transients: the figure allocator noise spares
                "rss_anon_loaded_mb": max(r["after_load_mb"]["RssAnon"] for r in mine),
                "rss_file_mb": max(r["peak_mb"]["RssFile"] for r in mine),
                "ips_warm": statistics.median(r["ips_warm"] for r in mine),
                "ips_cold": statistics.median(r["ips_cold"] for r in mine),
                "ips_warm_cpu": statistics.median(r["ips_warm_cpu"] for r in mine),
                "cached_mb_after_drop": max((r["cached_mb_after_drop"] or 0.0) for r in mine),
                # per image, ms: the gather of one epoch's images without compute
                "gather_cold_ms": statistics.median(1000 * r["gather_cold_s"] / r["per_epoch"] for r in mine),
                "gather_warm_ms": statistics.median(1000 * r["gather_warm_s"] / r["per_epoch"] for r in mine),
            })
    by = {(r["n"], r["path"]): r for r in rows}
    warm_ratio, warm_ratio_cpu, cold_ratio = {}, {}, {}
    for n in sizes:
        # mmap / ram of the SAME round, paired, then the median: drifting load cancels within a round
        paired = [m["ips_warm"] / r["ips_warm"] for m in runs for r in runs
                  if m["n"] == r["n"] == n and m["round"] == r["round"] and m["path"] == "mmap" and r["path"] == "ram"]
        warm_ratio[n] = {"median": statistics.median(paired), "per_round": paired}
        paired_cpu = [m["ips_warm_cpu"] / r["ips_warm_cpu"] for m in runs for r in runs if m["n"] == r["n"] == n
                      and m["round"] == r["round"] and m["path"] == "mmap" and r["path"] == "ram"]
        warm_ratio_cpu[n] = {"median": statistics.median(paired_cpu), "per_round": paired_cpu}
        cold_ratio[n] = by[n, "mmap"]["ips_cold"] / by[n, "mmap"]["ips_warm"]
    small, large = min(sizes), max(sizes)
    return {
        "rows": rows,
        "mmap_over_ram_warm": warm_ratio,
        "mmap_over_ram_warm_cpu": warm_ratio_cpu,
        "mmap_cold_over_warm": cold_ratio,
        "rss_anon_growth_mmap": by[large, "mmap"]["rss_anon_mb"] / by[small, "mmap"]["rss_anon_mb"],
        "rss_anon_growth_ram": by[large, "ram"]["rss_anon_mb"] / by[small, "ram"]["rss_anon_mb"],
    }


def markdown(results: dict[str, Any]) -> str:
    parts = [markdown_fits(results)] if results.get("summary") else []
    return "\n\n".join(parts + ([markdown_e2e(results)] if results.get("e2e") else []))


def markdown_fits(results: dict[str, Any]) -> str:
    a, s = results["args"], results["summary"]
    sizes = sorted({r["n"] for r in s["rows"]})
    small, large = min(sizes), max(sizes)
    lines = [
        f"{a['model']}, {a['size']} px x {a['channels']} channel(s) uint8, batch {a['batch_size']}, "
        f"{a['per_epoch']} images per epoch drawn over the whole set, {a['threads']} torch thread(s); "
        f"{a['rounds']} interleaved round(s), images/s warm = median of {a['warm_epochs']} epoch(s) per fit, median "
        "over rounds; RSS = peak over the fit (sampled every 50 ms), max over rounds:",
        "",
        "| images | path | load (s, cold) | RssAnon after load (MB) | peak RssAnon (MB) | peak RssFile (MB) "
        "| images/s warm | images/s cold | images per CPU s, warm | gather ms/image warm | gather ms/image cold |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        lines.append(f"| {r['n']:,} | {r['path']} | {r['load_s']:.2f} | {r['rss_anon_loaded_mb']:.0f} | "
                     f"{r['rss_anon_mb']:.0f} | "
                     f"{r['rss_file_mb']:.0f} | {r['ips_warm']:.1f} | {r['ips_cold']:.1f} | {r['ips_warm_cpu']:.1f} | "
                     f"{r['gather_warm_ms']:.3f} | {r['gather_cold_ms']:.3f} |")
    ratios = ", ".join(f"{n:,}: {s['mmap_over_ram_warm'][n]['median']:.3f}" for n in sizes)
    ratios_cpu = ", ".join(f"{n:,}: {s['mmap_over_ram_warm_cpu'][n]['median']:.3f}" for n in sizes)
    cold = ", ".join(f"{n:,}: {s['mmap_cold_over_warm'][n]:.2f}" for n in sizes)
    lines += [
        "",
        f"- Warm throughput, mmap / ram (paired within each round, median): {ratios} (target >= 0.95); "
        f"by CPU time: {ratios_cpu}.",
        f"- Peak RssAnon, {large:,} / {small:,} images: mmap {s['rss_anon_growth_mmap']:.3f} (target <= 1.10), "
        f"ram {s['rss_anon_growth_ram']:.2f}.",
        f"- Cold epoch / warm epoch throughput on the mmap path: {cold}.",
    ]
    by = {(r["n"], r["path"]): r for r in s["rows"]}
    for n in sizes:
        m, r = by[n, "mmap"], by[n, "ram"]
        extra = (m["gather_cold_ms"] - m["gather_warm_ms"]) / 1000
        lines.append(f"- Cold-cache cost at {n:,} images: the mmap gather reads {m['gather_cold_ms']:.3f} ms/image "
                     f"cold vs {m['gather_warm_ms']:.3f} warm (+{extra * a['per_epoch']:.2f} s per epoch of "
                     f"{a['per_epoch']:,} images scattered over the set); the ram path instead reads the whole "
                     f"file before the first step: {r['load_s']:.2f} s.")
    lines.append(
        "- \"Cold\" = this file's pages dropped from the page cache (madvise + posix_fadvise DONTNEED, checked "
        "with fincore) before the timed epoch and the timed gather; not root's drop_caches, and a virtual disk may "
        "still be served from the host's cache."
    )
    return "\n".join(lines)


def markdown_e2e(results: dict[str, Any]) -> str:
    a = results["args"]
    n, size = int(a["e2e_pngs"]), int(a["size"])
    lines = [f"End to end: `medclf run --folds 0` (1 epoch, a two-layer CNN) on {n:,} PNGs decoded to {size} px "
             f"grayscale (decoded set {n * size**2 / 2**20:.0f} MiB):",
             "", "| data.memory | decode cache | peak RssAnon (MB) | peak RssFile (MB) | wall (s) |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| {r['memory']} | {r['cache']} | {r['peak_mb']['RssAnon']:.0f} | {r['peak_mb']['RssFile']:.0f} "
              f"| {r['wall_s']:.0f} |" for r in results["e2e"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="images per synthetic set (default 2000 20000 100000; --quick 256 1024)")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default 128; --quick 32)")
    p.add_argument("--channels", type=int, default=1, choices=(1, 3), help="channels (default %(default)s)")
    p.add_argument("--per-epoch", type=int, default=None,
                   help="images per epoch, drawn over the whole set (default 512; --quick 128)")
    p.add_argument("--warm-epochs", type=int, default=None, help="timed warm epochs per fit (default 3; --quick 1)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved repetitions (default 2; --quick 1)")
    p.add_argument("--model", default="test_resnet", help="timm architecture (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default %(default)s)")
    # one thread: the measurement is the data path; a second thread on shared cores mostly measures neighbours
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", type=Path, default=None,
                   help="where the .npy sets are written and kept for reruns (default: a temp dir, removed)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write the table as Markdown here")
    p.add_argument("--wait-load", type=float, default=None, metavar="LOAD",
                   help="first wait until the 1-minute load average is below LOAD (polls every 30 s)")
    p.add_argument("--wait-max", type=float, default=1500, help="give up waiting after this many seconds")
    p.add_argument("--e2e-pngs", type=int, default=0, metavar="N",
                   help="also run `medclf run --folds 0` on N PNGs with data.memory mmap and ram (e.g. 20000)")
    p.add_argument("--skip-fits", action="store_true", help="only the end-to-end check (with --e2e-pngs)")
    p.add_argument("--quick", action="store_true", help="everything tiny: a smoke check in about a minute")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one fit, JSON spec
    args = p.parse_args(argv)
    for key, full, quick in (("sizes", [2000, 20000, 100000], [256, 1024]), ("size", 128, 32),
                             ("per_epoch", 512, 128), ("warm_epochs", 3, 1), ("rounds", 2, 1)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.per_epoch > min(args.sizes):
        p.error(f"--per-epoch {args.per_epoch} is larger than the smallest set ({min(args.sizes)} images)")
    return args


def measure(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    sets = {}
    for n in args.sizes:
        path = images_path(folder, n, channels=args.channels, size=args.size)
        start = time.perf_counter()
        write_synthetic(path, n, channels=args.channels, size=args.size, seed=args.seed)
        sets[n] = path
        print(f"set of {n:,} images: {path} ({path.stat().st_size / 2**20:.0f} MiB, "
              f"{time.perf_counter() - start:.1f} s)", flush=True)
    runs = []
    for round_ in range(args.rounds):
        for i, n in enumerate(args.sizes):
            order = PATHS if (round_ + i) % 2 == 0 else PATHS[::-1]  # alternate who goes first
            for path_kind in order:
                spec = {"images": str(sets[n]), "labels": str(sets[n].with_name(sets[n].stem + "-" + LABELS)),
                        "path": path_kind, "round": round_, "seed": args.seed, "per_epoch": args.per_epoch,
                        "warm_epochs": args.warm_epochs, "model": args.model, "batch_size": args.batch_size,
                        "threads": args.threads}
                r = run_worker(spec)
                runs.append(r)
                print(f"  round {round_} {n:>7,} {path_kind:4}: load {r['load_s']:.2f} s, RssAnon "
                      f"{r['peak_mb']['RssAnon']:.0f} MB, RssFile {r['peak_mb']['RssFile']:.0f} MB, warm "
                      f"{r['ips_warm']:.0f} img/s, cold {r['ips_cold']:.0f} img/s (cached after drop: "
                      f"{r['cached_mb_after_drop']} MB), load avg {os.getloadavg()[0]:.2f}", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    # the parent only: throughput.py's helpers import all of medclf, which the fresh worker need not carry
    from throughput import LoadSampler, machine_info, wait_for_quiet

    from medclf.atomic import atomic_write_json, atomic_write_text

    results: dict[str, Any] = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()
                                                                    if k != "worker"}}
    results["args"] |= {k: getattr(args, k) for k in ("size", "channels", "per_epoch", "warm_epochs", "rounds",
                                                      "model", "batch_size", "threads")}
    if args.wait_load is not None:
        results["wait"] = wait_for_quiet(args.wait_load, args.wait_max)
    results["load_avg_start"] = list(os.getloadavg())
    own = args.dir is None
    folder = Path(tempfile.mkdtemp(prefix="medclf-ooc-")) if own else args.dir
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        with LoadSampler() as sampler:
            if not args.skip_fits:
                results["runs"] = measure(args, folder)
            if args.e2e_pngs:
                results["e2e"] = bench_e2e(args, folder)
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    results["load_avg_during"] = sampler.summary()
    results["wall_s"] = time.perf_counter() - start
    if not args.skip_fits:
        results["summary"] = summarise(results["runs"], args.sizes)
    m = results["machine"]
    header = (f"{m['cpu']}, {m['cpu_count']} cores, {m['ram_gib']} GiB, torch {m['torch']}, {m['date']}; 1-minute "
              f"load average {results['load_avg_start'][0]:.2f} at start, {results['load_avg_during']['median']:.2f} "
              f"median during the run (max {results['load_avg_during']['max']:.2f}); {results['wall_s']:.0f} s")
    table = markdown(results)
    print(f"\n{header}\n\n{table}")
    if args.out is not None:
        atomic_write_json(args.out, results)
        print(f"\nwrote {args.out}")
    if args.markdown is not None:
        atomic_write_text(args.markdown, f"{header}\n\n{table}\n")
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
