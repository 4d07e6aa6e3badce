"""Plumbing shared by the benchmark scripts: machine facts, load average, medians, result files.

The scripts run as ``python benchmarks/<name>.py``, which puts this folder on ``sys.path``; they import this module
as ``_common``. Nothing here measures anything.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import torch

import medclf


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def wait_for_quiet(threshold: float, max_wait_s: float, poll_s: float = 30.0) -> dict[str, Any]:
    """Poll the 1-minute load average until it is below ``threshold`` or ``max_wait_s`` has passed."""
    start = time.monotonic()
    while True:
        load = load1()
        waited = time.monotonic() - start
        if load < threshold:
            print(f"load average {load} < {threshold} after {waited:.0f} s: starting", flush=True)
            return {"threshold": threshold, "waited_s": round(waited), "quiet": True, "load_at_start": load}
        if waited >= max_wait_s:
            print(f"load average still {load} after {waited:.0f} s: running anyway", flush=True)
            return {"threshold": threshold, "waited_s": round(waited), "quiet": False, "load_at_start": load}
        print(f"load average {load} >= {threshold}; waiting ({waited:.0f}/{max_wait_s:.0f} s)", flush=True)
        time.sleep(poll_s)


def warn_if_loaded(load: float) -> None:
    """Print a warning when the 1-minute load average ``load`` says other processes share the cores."""
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: the 1-minute load average is {load:.2f} on {os.cpu_count()} cores; "
              "other processes distort the timings (multi-threaded torch can slow down many times over when it "
              "shares its cores). Consider --wait-load 0.6, or OMP_WAIT_POLICY=PASSIVE in the environment.",
              flush=True)


class LoadSampler:
    """Samples the 1-minute load average every ``period_s`` seconds in a background thread."""

    def __init__(self, period_s: float = 10.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period_s,), daemon=True)

    def _run(self, period_s: float) -> None:
        while not self._stop.is_set():
            self.samples.append(load1())
            self._stop.wait(period_s)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        s = self.samples or [float("nan")]
        return {"min": min(s), "median": med(s), "max": max(s), "n_samples": len(self.samples)}


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    import timm

    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "medclf": medclf.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda_available": torch.cuda.is_available(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: active spin-wait)"),
    }


def machine_line(machine: dict[str, Any]) -> str:
    """One line naming the machine a table was measured on."""
    threads = f" ({machine['torch_threads']} threads)" if "torch_threads" in machine else ""
    return (f"{machine['cpu']}, {machine['cpu_count']} cores, {machine['ram_gib']} GiB, torch {machine['torch']}"
            f"{threads}, timm {machine['timm']}, {machine['date']}")


def ips(n_images: int, seconds: float) -> float:
    return n_images / seconds if seconds > 0 else float("nan")


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cpu_bf16_refusal() -> str | None:
    """medclf's reason for refusing bf16 autocast on this CPU (no bf16 instructions), or None when it runs it.

    The benchmarks ask medclf rather than probing the CPU themselves, so what they skip is what a fit would refuse.
    """
    from medclf.training.device import cpu_precision_problem

    return cpu_precision_problem("bf16")


def write_results(out: Path | None, stem: str, results: dict[str, Any], markdown: str) -> list[Path]:
    """Write ``results`` as JSON and ``markdown`` as a .md file; returns the paths written.

    ``out`` ending in ``.json`` is the JSON file itself (the Markdown goes beside it, same stem); any other ``out``
    is a folder that receives ``<stem>.json`` and ``<stem>.md``. ``None`` writes nothing.
    """
    if out is None:
        return []
    if out.suffix == ".json":
        json_path, md_path = out, out.with_suffix(".md")
    else:
        json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(markdown.rstrip("\n") + "\n")
    return [json_path, md_path]
